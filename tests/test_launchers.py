"""The launchers' commands: a TPU VM slice through gcloud (`launch.tpu_pod`),
a SLURM batch script (`launch.slurm`) and N local processes
(`launch.local`). Nothing here reaches a network or starts JAX."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tarfile
import tempfile

import pytest

from launch import local
from launch import slurm
from launch import tpu_pod

GCLOUD = ['gcloud', 'compute', 'tpus', 'tpu-vm']
ZONE = 'us-central2-b'
# Values the shells between here and the training must hand on unchanged.
TRAIN_ARGS = ['--config=configs/hourglass.py:smoke',
              '--workdir=gs://bucket/runs/hg',
              '--config.input.image_size=(32,32)',
              '--config.experiment_name=two words',
              "--config.note=it's $HOME; `x`"]


def _flag(command, name):
  """The value of ``name=...`` in `command` (exactly one such flag)."""
  values = [a[len(name) + 1:] for a in command if a.startswith(name + '=')]
  assert len(values) == 1, (name, command)
  return values[0]


def _remote_words(command):
  """The words the workers' shell makes of an ssh command's --command."""
  return shlex.split(_flag(command, '--command'))


def _no_subprocess(*args, **kwargs):
  raise AssertionError(f'subprocess.run called: {args} {kwargs}')


# launch.tpu_pod

def test_describe_and_create_name_the_vm_zone_and_project():
  vm = tpu_pod.TpuVm('pod', ZONE, 'proj')
  assert vm.describe() == [*GCLOUD, 'describe', 'pod', f'--zone={ZONE}',
                           '--project=proj']
  create = vm.create('v4-32', 'tpu-ubuntu2204-base')
  assert create == [*GCLOUD, 'create', 'pod', f'--zone={ZONE}',
                    '--project=proj', '--accelerator-type=v4-32',
                    '--version=tpu-ubuntu2204-base']
  assert vm.create('v4-32', 'v', spot=True) == [
      *GCLOUD, 'create', 'pod', f'--zone={ZONE}', '--project=proj',
      '--accelerator-type=v4-32', '--version=v', '--spot']
  without_project = tpu_pod.TpuVm('pod', ZONE)
  assert not any(a.startswith('--project')
                 for a in without_project.create('v4-8', 'v'))
  assert not any(a.startswith('--project')
                 for a in without_project.describe())


def test_creating_needs_an_accelerator_type():
  with pytest.raises(ValueError, match='--accelerator_type'):
    tpu_pod.TpuVm('pod', ZONE).create(None, 'tpu-ubuntu2204-base')


def test_copied_code_goes_to_every_worker():
  vm = tpu_pod.TpuVm('pod', ZONE, 'proj')
  scp, untar = tpu_pod.code_commands(vm, 'copy', '/tmp/t/hpe_jax.tar.gz')
  assert scp == [*GCLOUD, 'scp', '/tmp/t/hpe_jax.tar.gz',
                 'pod:~/hpe_jax.tar.gz', f'--zone={ZONE}', '--project=proj',
                 '--worker=all']
  assert untar[:len(GCLOUD) + 2] == [*GCLOUD, 'ssh', 'pod']
  assert '--worker=all' in untar and f'--zone={ZONE}' in untar
  assert '--project=proj' in untar
  assert _remote_words(untar) == [
      'rm', '-rf', '~/hpe_jax', '&&', 'mkdir', '-p', '~/hpe_jax', '&&',
      'tar', '-xzf', '~/hpe_jax.tar.gz', '-C', '~/hpe_jax']


@pytest.mark.parametrize('code, url, ref', [
    ('https://github.com/x/y.git@v1.2', 'https://github.com/x/y.git', 'v1.2'),
    ('https://github.com/x/y.git', 'https://github.com/x/y.git', None),
    ('git@github.com:x/y.git', 'git@github.com:x/y.git', None),
    ('git@github.com:x/y.git@main', 'git@github.com:x/y.git', 'main'),
    ('https://me@host.org/x/y.git@feature/z', 'https://me@host.org/x/y.git',
     'feature/z'),
])
def test_cloned_code_is_checked_out_at_the_ref(code, url, ref):
  assert tpu_pod.split_git_ref(code) == (url, ref)
  vm = tpu_pod.TpuVm('pod', ZONE)
  [clone] = tpu_pod.code_commands(vm, code)
  assert '--worker=all' in clone and f'--zone={ZONE}' in clone
  words = _remote_words(clone)
  assert words[:7] == ['rm', '-rf', '~/hpe_jax', '&&', 'git', 'clone', url]
  assert words[7] == '~/hpe_jax'
  if ref:
    assert words[8:] == ['&&', 'cd', '~/hpe_jax', '&&', 'git', 'checkout',
                         ref]
  else:
    assert len(words) == 8


def test_setup_installs_the_requirements_jax_tpu_and_gcs():
  script = tpu_pod.install_script('python3.11')
  steps = [shlex.split(s) for s in script.split(' && ')]
  assert ['python3.11', '-m', 'venv', '~/hpe_venv'] in steps
  [install] = [s for s in steps if '-r' in s]
  assert install[0] == '~/hpe_venv/bin/pip'
  assert install[install.index('-r') + 1] == '~/hpe_jax/requirements.txt'
  assert install[install.index('-f') + 1] == (
      'https://storage.googleapis.com/jax-releases/libtpu_releases.html')
  assert {'jax[tpu]', 'gcsfs', 'google-cloud-storage'} <= set(install)
  # The venv exists before pip runs.
  assert script.index('-m venv') < script.index('bin/pip install')


def test_training_args_reach_every_worker_intact():
  vm = tpu_pod.TpuVm('pod', ZONE, 'proj')
  train = vm.ssh(tpu_pod.train_script(TRAIN_ARGS))
  assert '--worker=all' in train and '--project=proj' in train
  assert _remote_words(train) == [
      'cd', '~/hpe_jax', '&&', '~/hpe_venv/bin/python', '-m', 'hpe_jax.main',
      *TRAIN_ARGS]


def test_detached_training_runs_under_nohup_into_the_log():
  words = shlex.split(tpu_pod.train_script(TRAIN_ARGS, detach=True))
  assert words == [
      'cd', '~/hpe_jax', '&&', 'nohup', '~/hpe_venv/bin/python', '-m',
      'hpe_jax.main', *TRAIN_ARGS, '<', '/dev/null', '>',
      '~/hpe_jax_train.log', '2>&1', '&']


def _tpu_argv(*flags, train_args=TRAIN_ARGS):
  return ['--tpu=pod', f'--zone={ZONE}', *flags, '--', *train_args]


def test_dry_run_prints_every_command_and_runs_nothing(capsys, monkeypatch):
  monkeypatch.setattr(subprocess, 'run', _no_subprocess)
  assert tpu_pod.main(_tpu_argv('--project=proj', '--accelerator_type=v4-32',
                                '--spot', '--dry_run')) == 0
  lines = capsys.readouterr().out.strip().split('\n')
  commands = [shlex.split(l) for l in lines if not l.startswith('#')]
  vm = tpu_pod.TpuVm('pod', ZONE, 'proj')
  archive = os.path.join(tempfile.gettempdir(), 'hpe_jax.tar.gz')
  assert commands == [
      vm.describe(),
      vm.create('v4-32', 'tpu-ubuntu2204-base', spot=True),
      *tpu_pod.code_commands(vm, 'copy', archive),
      vm.ssh(tpu_pod.install_script()),
      vm.ssh(tpu_pod.train_script(TRAIN_ARGS)),
  ]
  for command in commands[2:]:
    assert '--worker=all' in command


def test_dry_run_with_clone_skip_setup_and_detach(capsys, monkeypatch):
  monkeypatch.setattr(subprocess, 'run', _no_subprocess)
  assert tpu_pod.main(_tpu_argv(
      '--code=https://github.com/x/y.git@v1', '--skip_setup', '--detach',
      '--dry_run')) == 0
  lines = capsys.readouterr().out.strip().split('\n')
  vm = tpu_pod.TpuVm('pod', ZONE)
  assert [shlex.split(l) for l in lines] == [
      vm.describe(),
      vm.ssh(tpu_pod.clone_script('https://github.com/x/y.git', 'v1')),
      vm.ssh(tpu_pod.train_script(TRAIN_ARGS, detach=True)),
  ]


@pytest.mark.parametrize('flags, train_args, message', [
    ((), [a for a in TRAIN_ARGS if not a.startswith('--config=')],
     '--config='),
    ((), [a for a in TRAIN_ARGS if not a.startswith('--workdir=')],
     '--workdir='),
    ((), [], '--config='),
    ((), ['--config=c.py', '--workdir=/tmp/runs/hg'], 'gs://'),
    ((), ['--config=c.py', '--workdir=runs/hg'], 'gs://'),
    (('--code=../elsewhere',), TRAIN_ARGS, 'git URL'),
])
def test_bad_arguments_are_rejected(flags, train_args, message, capsys,
                                    monkeypatch):
  monkeypatch.setattr(subprocess, 'run', _no_subprocess)
  with pytest.raises(SystemExit) as e:
    tpu_pod.main(_tpu_argv(*flags, '--dry_run', train_args=train_args))
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_tpu_and_zone_are_required(capsys):
  for argv in (['--zone=z', '--', *TRAIN_ARGS], ['--tpu=p', '--', *TRAIN_ARGS]):
    with pytest.raises(SystemExit) as e:
      tpu_pod.main(argv)
    assert e.value.code == 2
    assert 'required' in capsys.readouterr().err


class _Recorder:
  """Stands for subprocess.run: records the commands, fakes their results."""

  def __init__(self, describe_status=0, fail_verb=None, files=()):
    self.commands = []
    self.archive_members = None
    self.describe_status = describe_status
    self.fail_verb = fail_verb
    self.files = files

  def __call__(self, command, **kwargs):
    command = list(command)
    self.commands.append(command)
    if command[:2] == ['git', 'ls-files']:
      listing = ''.join(f + '\0' for f in self.files).encode()
      return subprocess.CompletedProcess(command, 0, stdout=listing)
    verb = command[len(GCLOUD)]
    if verb == 'scp':
      # The archive lives in a temporary directory only while it is copied.
      with tarfile.open(command[len(GCLOUD) + 1]) as tar:
        self.archive_members = sorted(tar.getnames())
    status = 0
    if verb == 'describe':
      status = self.describe_status
    elif verb == self.fail_verb:
      status = 5
    return subprocess.CompletedProcess(command, status)

  def verbs(self):
    return [c[len(GCLOUD)] if c[0] == 'gcloud' else c[0]
            for c in self.commands]


@pytest.mark.parametrize('describe_status, created', [(1, True), (0, False)])
def test_real_run_creates_the_vm_only_when_missing(describe_status, created,
                                                  monkeypatch):
  recorder = _Recorder(describe_status,
                       files=['README.md', 'launch/tpu_pod.py'])
  monkeypatch.setattr(subprocess, 'run', recorder)
  assert tpu_pod.main(_tpu_argv('--accelerator_type=v4-8')) == 0
  assert recorder.verbs() == (['describe'] + ['create'] * created
                              + ['git', 'scp', 'ssh', 'ssh', 'ssh'])
  if created:
    assert recorder.commands[1] == tpu_pod.TpuVm('pod', ZONE).create(
        'v4-8', 'tpu-ubuntu2204-base')
  assert recorder.archive_members == ['README.md', 'launch/tpu_pod.py']
  assert _remote_words(recorder.commands[-1])[-len(TRAIN_ARGS):] == TRAIN_ARGS


def test_missing_vm_without_accelerator_type_is_a_clear_error(capsys,
                                                              monkeypatch):
  recorder = _Recorder(describe_status=1)
  monkeypatch.setattr(subprocess, 'run', recorder)
  with pytest.raises(SystemExit) as e:
    tpu_pod.main(_tpu_argv())
  assert e.value.code == 2
  assert '--accelerator_type' in capsys.readouterr().err
  assert recorder.verbs() == ['describe']


def test_real_run_stops_at_the_failing_step(monkeypatch):
  recorder = _Recorder(fail_verb='ssh')
  monkeypatch.setattr(subprocess, 'run', recorder)
  assert tpu_pod.main(_tpu_argv(
      '--code=https://github.com/x/y.git')) == 5
  assert recorder.verbs() == ['describe', 'ssh']


# launch.slurm

SLURM_ARGS = ['--config=configs/hourglass.py',
              '--workdir=/shared/runs/hg two',
              '--config.input.image_size=(32,32)']


def _sbatch_lines(script):
  return [l for l in script.split('\n') if l.startswith('#SBATCH')]


def test_a_process_per_gpu():
  script = slurm.batch_script(
      SLURM_ARGS, nodes=2, gpus_per_node=8, repo_root='/home/me/hpe',
      partition='gpu', account='lab', time='2:00:00', cpus_per_gpu=6,
      job_name='hg')
  assert script.startswith('#!/bin/bash\n')
  assert _sbatch_lines(script) == [
      '#SBATCH --job-name=hg', '#SBATCH --nodes=2',
      '#SBATCH --ntasks-per-node=8', '#SBATCH --gpus-per-node=8',
      '#SBATCH --cpus-per-task=6', '#SBATCH --time=2:00:00',
      '#SBATCH --partition=gpu', '#SBATCH --account=lab',
      '#SBATCH --output=hg-%j.out', '#SBATCH --signal=TERM@120']
  assert 'JAX_LOCAL_DEVICE_IDS' not in script
  assert 'source ' not in script


def test_a_process_per_node_drives_all_its_gpus():
  script = slurm.batch_script(SLURM_ARGS, nodes=3, gpus_per_node=4,
                              repo_root='/repo', process_per='node',
                              cpus_per_gpu=8)
  assert _sbatch_lines(script) == [
      '#SBATCH --job-name=hpe_jax', '#SBATCH --nodes=3',
      '#SBATCH --ntasks-per-node=1', '#SBATCH --gpus-per-node=4',
      '#SBATCH --cpus-per-task=32', '#SBATCH --time=24:00:00',
      '#SBATCH --output=hpe_jax-%j.out', '#SBATCH --signal=TERM@120']
  lines = script.split('\n')
  assert 'export JAX_LOCAL_DEVICE_IDS=0,1,2,3' in lines
  srun = [i for i, l in enumerate(lines) if l.startswith('srun ')]
  assert lines.index('export JAX_LOCAL_DEVICE_IDS=0,1,2,3') < srun[0]


def test_the_script_activates_enters_the_repo_and_runs_srun():
  script = slurm.batch_script(SLURM_ARGS, nodes=1, gpus_per_node=2,
                              repo_root='/home/me/my repo',
                              venv='/home/me/venv')
  lines = script.rstrip('\n').split('\n')
  order = [lines.index('set -euo pipefail'),
           lines.index('source /home/me/venv/bin/activate'),
           lines.index("cd '/home/me/my repo'")]
  assert order == sorted(order)
  assert shlex.split(lines[-1]) == ['srun', 'python', '-m', 'hpe_jax.main',
                                    *SLURM_ARGS]


def _slurm_argv(*flags, train_args=SLURM_ARGS):
  return ['--nodes=2', '--gpus_per_node=8', *flags, '--', *train_args]


def test_without_output_the_script_is_printed(capsys, monkeypatch):
  monkeypatch.setattr(subprocess, 'run', _no_subprocess)
  assert slurm.main(_slurm_argv('--process_per=node')) == 0
  assert capsys.readouterr().out == slurm.batch_script(
      SLURM_ARGS, nodes=2, gpus_per_node=8, repo_root=slurm.REPO_ROOT,
      process_per='node')
  assert os.path.isabs(slurm.REPO_ROOT)


def test_output_writes_the_script_and_submit_hands_it_to_sbatch(
    tmp_path, capsys, monkeypatch):
  calls = []

  def sbatch(command, **kwargs):
    calls.append(list(command))
    return subprocess.CompletedProcess(
        command, 0, stdout='Submitted batch job 42\n', stderr='')

  monkeypatch.setattr(subprocess, 'run', sbatch)
  monkeypatch.chdir(tmp_path)
  path = str(tmp_path / 'hg.sbatch')
  assert slurm.main(_slurm_argv(f'--output={path}', '--venv=venv')) == 0
  assert not calls
  expected = slurm.batch_script(
      SLURM_ARGS, nodes=2, gpus_per_node=8, repo_root=slurm.REPO_ROOT,
      venv=str(tmp_path / 'venv'))
  with open(path) as f:
    assert f.read() == expected

  assert slurm.main(_slurm_argv(f'--output={path}', '--submit')) == 0
  assert calls == [['sbatch', path]]
  assert 'Submitted batch job 42' in capsys.readouterr().out


@pytest.mark.parametrize('flags, train_args, message', [
    ((), SLURM_ARGS[1:], '--config='),
    ((), [SLURM_ARGS[0]], '--workdir='),
    (('--nodes=0',), SLURM_ARGS, '--nodes=0'),
    (('--gpus_per_node=0',), SLURM_ARGS, '--gpus_per_node=0'),
    (('--cpus_per_gpu=0',), SLURM_ARGS, '--cpus_per_gpu=0'),
    (('--process_per=task',), SLURM_ARGS, '--process_per'),
    (('--job_name=my job',), SLURM_ARGS, '--job_name'),
    (('--submit',), SLURM_ARGS, '--output'),
])
def test_bad_slurm_arguments_are_rejected(flags, train_args, message, capsys,
                                          monkeypatch):
  monkeypatch.setattr(subprocess, 'run', _no_subprocess)
  # A bad count comes after the good one, and argparse keeps the last.
  argv = ['--nodes=2', '--gpus_per_node=8', *flags, '--', *train_args]
  with pytest.raises(SystemExit) as e:
    slurm.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


# launch.local

def test_each_process_gets_the_coordinator_flags():
  out = local.process_commands(['prog', '--a=1'], 3, 1234,
                               base_env={'KEEP': 'yes'})
  assert [cmd for cmd, _ in out] == [
      ['prog', '--a=1', '--coordinator_address=127.0.0.1:1234',
       '--num_processes=3', f'--process_id={i}'] for i in range(3)]
  for _, env in out:
    assert env == {'KEEP': 'yes'}


def test_processes_inherit_this_environment(monkeypatch):
  monkeypatch.setenv('HPE_JAX_LAUNCHER_TEST', 'here')
  [(_, env)] = local.process_commands(['prog'], 1, 1)
  assert env['HPE_JAX_LAUNCHER_TEST'] == 'here'


def test_virtual_cpu_devices():
  base = {'KEEP': 'yes'}
  out = local.process_commands(['prog'], 2, 1, cpu_devices_per_process=4,
                               base_env=base)
  for _, env in out:
    assert env == {'KEEP': 'yes', 'JAX_PLATFORMS': 'cpu',
                   'JAX_NUM_CPU_DEVICES': '4'}
  assert base == {'KEEP': 'yes'}


def test_gpus_are_sliced_among_processes():
  out = local.process_commands(['prog'], 3, 1, gpus_per_process=2,
                               base_env={})
  assert [env for _, env in out] == [{'CUDA_VISIBLE_DEVICES': '0,1'},
                                     {'CUDA_VISIBLE_DEVICES': '2,3'},
                                     {'CUDA_VISIBLE_DEVICES': '4,5'}]


@pytest.mark.parametrize('kwargs, message', [
    (dict(command=[], num_processes=2), 'no command'),
    (dict(command=['prog'], num_processes=0), 'at least 1'),
    (dict(command=['prog'], num_processes=2, cpu_devices_per_process=2,
          gpus_per_process=1), 'exclude each other'),
])
def test_bad_local_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    local.process_commands(port=1, base_env={}, **kwargs)


def test_local_main_without_a_command_is_rejected(capsys):
  with pytest.raises(SystemExit) as e:
    local.main(['--num_processes=2'])
  assert e.value.code == 2
  assert 'no command' in capsys.readouterr().err


def test_local_main_runs_every_process_and_prefixes_its_output(capfd):
  assert local.main(['--num_processes=2', '--', sys.executable, '-c',
                     'import sys; print(sys.argv[1:])']) == 0
  lines = capfd.readouterr().out.split('\n')
  for i in range(2):
    [line] = [l for l in lines if l.startswith(f'[{i}] ')]
    assert f"'--process_id={i}'" in line
    assert "'--num_processes=2'" in line


def test_local_main_returns_the_failing_status(capfd):
  assert local.main(['--num_processes=2', '--', sys.executable, '-c',
                     'import sys; sys.exit(3)']) == 3
  assert 'exited with status 3' in capfd.readouterr().out
