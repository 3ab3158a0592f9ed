r"""Runs one training command on every worker of a Cloud TPU VM slice.

  python -m launch.tpu_pod --tpu=hg-pod --zone=us-central2-b \
      --accelerator_type=v4-32 [--project=P] [--spot] [--detach] -- \
      --config=configs/hourglass.py --workdir=gs://BUCKET/runs/hg \
      [--config.key=value ...]

Every step is one ``gcloud compute tpus tpu-vm`` command, run in order from
this machine:

1. ``describe`` the TPU VM; if that fails (it does not exist), ``create`` it
   with ``--accelerator_type`` and ``--version`` (and ``--spot`` if asked).
2. Put the code in ``~/hpe_jax`` on every worker. ``--code=copy`` (default)
   packs the files git tracks in this checkout, as they are on disk now, and
   copies the archive with ``scp``; ``--code=GIT_URL[@REF]`` has every worker
   clone the repository (and check out REF) instead.
3. Unless ``--skip_setup``: make the virtual environment ``~/hpe_venv`` with
   ``--python`` and install ``requirements.txt``, ``jax[tpu]`` (with libtpu)
   and ``gcsfs``/``google-cloud-storage`` for the ``gs://`` workdir.
4. Run ``python -m hpe_jax.main`` with the arguments after ``--`` on every
   worker at once; JAX finds the other workers of the slice by itself
   (`hpe_jax.runtime.multihost`). In the foreground the output of all
   workers streams here; ``--detach`` starts it under ``nohup`` instead, with
   the output in ``~/hpe_jax_train.log`` on each worker, so it outlives the
   ssh sessions.

The workdir must be a ``gs://`` path: the workers share no disk and each one
writes its own shards of every checkpoint. Running the same command again
resumes the run from the latest checkpoint in the workdir (after a
preemption of a ``--spot`` slice, for instance); ``--skip_setup`` saves the
reinstall when the VM survived.

Following a detached run (worker 0 writes the metrics):

  gcloud compute tpus tpu-vm ssh hg-pod --zone=us-central2-b --worker=0 \
      --command='tail -f ~/hpe_jax_train.log'

Deleting the VM when done (it costs money while it exists):

  gcloud compute tpus tpu-vm delete hg-pod --zone=us-central2-b

``--dry_run`` prints the commands, one per line, and runs nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
from typing import Sequence

from launch import command_line

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Paths on the workers; written unquoted in remote commands so that the
# remote shell expands the ``~``.
REMOTE_CODE = '~/hpe_jax'
REMOTE_ARCHIVE = '~/hpe_jax.tar.gz'
REMOTE_VENV = '~/hpe_venv'
REMOTE_LOG = '~/hpe_jax_train.log'

LIBTPU_RELEASES = (
    'https://storage.googleapis.com/jax-releases/libtpu_releases.html')


@dataclasses.dataclass(frozen=True)
class TpuVm:
  """A Cloud TPU VM (one or many workers) and the gcloud commands on it."""
  name: str
  zone: str
  project: str | None = None

  def _gcloud(self, verb: str, *positional: str,
              flags: Sequence[str] = ()) -> list[str]:
    project = [f'--project={self.project}'] if self.project else []
    return ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, *positional,
            f'--zone={self.zone}', *project, *flags]

  def describe(self) -> list[str]:
    """Succeeds exactly when the VM exists."""
    return self._gcloud('describe', self.name)

  def create(self, accelerator_type: str | None, version: str,
             spot: bool = False) -> list[str]:
    """Creates the VM.

    Raises:
      ValueError: no accelerator type, which gcloud needs to create one.
    """
    if not accelerator_type:
      raise ValueError(
          f'TPU VM {self.name!r} does not exist in zone {self.zone}; pass '
          '--accelerator_type (e.g. v4-32) to create it')
    flags = [f'--accelerator-type={accelerator_type}', f'--version={version}']
    return self._gcloud('create', self.name,
                        flags=flags + (['--spot'] if spot else []))

  def scp(self, local: str, remote: str) -> list[str]:
    """Copies the file `local` to `remote` on every worker."""
    return self._gcloud('scp', local, f'{self.name}:{remote}',
                        flags=['--worker=all'])

  def ssh(self, remote_command: str) -> list[str]:
    """Runs the shell command line `remote_command` on every worker."""
    return self._gcloud('ssh', self.name,
                        flags=['--worker=all', f'--command={remote_command}'])


def split_git_ref(code: str) -> tuple[str, str | None]:
  """``URL[@REF]`` as (URL, REF or None).

  Only an ``@`` inside the repository path separates the ref, so the user
  part of ``git@host:x/y.git`` or ``https://user@host/x/y.git`` stays in the
  URL.
  """
  if '://' in code:
    scheme_end = code.index('://') + 3
    slash = code.find('/', scheme_end)
    path_start = len(code) if slash < 0 else slash
  else:  # scp-like user@host:path
    path_start = code.find(':') + 1
  at = code.find('@', path_start)
  if at < 0:
    return code, None
  return code[:at], code[at + 1:] or None


def untar_script() -> str:
  """Replaces the workers' code with the copied archive."""
  return (f'rm -rf {REMOTE_CODE} && mkdir -p {REMOTE_CODE} && '
          f'tar -xzf {REMOTE_ARCHIVE} -C {REMOTE_CODE}')


def clone_script(url: str, ref: str | None = None) -> str:
  """Replaces the workers' code with a clone of `url` at `ref`."""
  script = (f'rm -rf {REMOTE_CODE} && '
            f'git clone {shlex.quote(url)} {REMOTE_CODE}')
  if ref:
    script += f' && cd {REMOTE_CODE} && git checkout {shlex.quote(ref)}'
  return script


def install_script(python: str = 'python3.11') -> str:
  """Makes the workers' virtual environment and installs the project's needs.

  The TPU VM images run Ubuntu 22.04, whose own Python (3.10) is older than
  the jax the requirements ask for, hence a named interpreter from apt.
  """
  pip = f'{REMOTE_VENV}/bin/pip'
  return ' && '.join([
      'sudo apt-get update -qq',
      'sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq '
      + shlex.join([python, f'{python}-venv']),
      f'{shlex.quote(python)} -m venv {REMOTE_VENV}',
      f'{pip} install -q --upgrade pip',
      f'{pip} install -q -r {REMOTE_CODE}/requirements.txt '
      + shlex.join(['jax[tpu]', '-f', LIBTPU_RELEASES, 'gcsfs',
                    'google-cloud-storage']),
  ])


def train_script(train_args: Sequence[str], detach: bool = False) -> str:
  """Runs the training on a worker, in the foreground or detached."""
  train = (f'{REMOTE_VENV}/bin/python -m hpe_jax.main '
           + shlex.join(train_args))
  if detach:
    # Without its own stdin and output the process would hold the ssh
    # session open, and die with it.
    train = f'nohup {train} < /dev/null > {REMOTE_LOG} 2>&1 &'
  return f'cd {REMOTE_CODE} && {train}'


def check_train_args(train_args: Sequence[str]) -> None:
  """Raises ValueError unless the args name a recipe and a gs:// workdir."""
  workdir = command_line.train_workdir(train_args)
  if not workdir.startswith('gs://'):
    raise ValueError(
        f'--workdir={workdir}: the workdir must be a gs:// path, since '
        'the workers share no disk and each writes its checkpoint shards')


def tracked_files(repo_root: str) -> list[str]:
  """The files git tracks under `repo_root` that exist on disk."""
  listing = subprocess.run(['git', 'ls-files', '-z'], cwd=repo_root,
                           check=True, capture_output=True).stdout
  names = [n for n in os.fsdecode(listing).split('\0') if n]
  # A tracked file deleted in the working tree is not part of the code.
  return [n for n in names if os.path.isfile(os.path.join(repo_root, n))]


def pack(repo_root: str, names: Sequence[str], archive: str) -> None:
  """Writes the files `names` (relative to `repo_root`) to a tar.gz."""
  with tarfile.open(archive, 'w:gz') as tar:
    for name in names:
      tar.add(os.path.join(repo_root, name), arcname=name)


def code_commands(vm: TpuVm, code: str,
                  archive: str | None = None) -> list[list[str]]:
  """The commands that put the code on every worker.

  Args:
    vm: the TPU VM.
    code: ``copy`` or ``GIT_URL[@REF]``.
    archive: with ``copy``, the local tar.gz of the code.
  """
  if code == 'copy':
    if not archive:
      raise ValueError('--code=copy needs the local archive')
    return [vm.scp(archive, REMOTE_ARCHIVE), vm.ssh(untar_script())]
  return [vm.ssh(clone_script(*split_git_ref(code)))]


def _run_all(commands: Sequence[Sequence[str]]) -> int:
  for command in commands:
    status = subprocess.run(list(command)).returncode
    if status:
      print(f'[launch.tpu_pod] failed with status {status}: '
            f'{shlex.join(command)}', file=sys.stderr, flush=True)
      return status
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  argv, train_args = command_line.split_at_dashes(
      sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(
      prog='python -m launch.tpu_pod',
      description='Runs hpe_jax.main on every worker of a Cloud TPU VM.')
  parser.add_argument('--tpu', required=True, help='TPU VM name')
  parser.add_argument('--zone', required=True)
  parser.add_argument('--project', default=None)
  parser.add_argument('--accelerator_type', default=None,
                      help='e.g. v4-32; needed only to create the VM')
  parser.add_argument('--version', default='tpu-ubuntu2204-base',
                      help='TPU software version of a created VM')
  parser.add_argument('--spot', action='store_true',
                      help='create a spot (preemptible) VM')
  parser.add_argument('--code', default='copy',
                      help='copy (this checkout) or GIT_URL[@REF]')
  parser.add_argument('--python', default='python3.11',
                      help='interpreter (apt package) of the workers\' venv')
  parser.add_argument('--skip_setup', action='store_true',
                      help='reuse the workers\' virtual environment')
  parser.add_argument('--detach', action='store_true',
                      help='run under nohup, output in ~/hpe_jax_train.log')
  parser.add_argument('--dry_run', action='store_true',
                      help='print the commands, run nothing')
  args = parser.parse_args(argv)
  try:
    check_train_args(train_args)
  except ValueError as e:
    parser.error(str(e))
  if args.code != 'copy' and ':' not in args.code:
    parser.error(f'--code={args.code}: expected copy or a git URL '
                 '(GIT_URL[@REF]) that the workers can clone')

  vm = TpuVm(args.tpu, args.zone, args.project)
  setup = [] if args.skip_setup else [vm.ssh(install_script(args.python))]
  train = vm.ssh(train_script(train_args, args.detach))

  if args.dry_run:
    archive = os.path.join(tempfile.gettempdir(), 'hpe_jax.tar.gz')
    print(shlex.join(vm.describe()))
    if args.accelerator_type:
      print('# only if the describe above fails:')
      print(shlex.join(vm.create(args.accelerator_type, args.version,
                                 args.spot)))
    if args.code == 'copy':
      print(f'# pack the files git tracks in {REPO_ROOT} into {archive}')
    for command in [*code_commands(vm, args.code, archive), *setup, train]:
      print(shlex.join(command))
    return 0

  try:
    exists = subprocess.run(vm.describe(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode == 0
    if not exists:
      try:
        create = vm.create(args.accelerator_type, args.version, args.spot)
      except ValueError as e:
        parser.error(str(e))
      print(f'[launch.tpu_pod] creating TPU VM {vm.name}', flush=True)
      status = _run_all([create])
      if status:
        return status
    with tempfile.TemporaryDirectory() as tmp:
      archive = None
      if args.code == 'copy':
        archive = os.path.join(tmp, 'hpe_jax.tar.gz')
        try:
          names = tracked_files(REPO_ROOT)
        except (OSError, subprocess.CalledProcessError) as e:
          print(f'[launch.tpu_pod] cannot list the files git tracks in '
                f'{REPO_ROOT} ({e}); pass --code=GIT_URL[@REF] instead',
                file=sys.stderr)
          return 1
        pack(REPO_ROOT, names, archive)
      status = _run_all(code_commands(vm, args.code, archive))
    if status:
      return status
    return _run_all([*setup, train])
  except FileNotFoundError as e:  # no gcloud here
    print(f'[launch.tpu_pod] {e}', file=sys.stderr)
    return 127
  except KeyboardInterrupt:
    return 130


if __name__ == '__main__':
  sys.exit(main())
