"""Multi-host training on one machine: 2 processes x 2 virtual CPU devices.

The processes talk through JAX's distributed runtime on loopback with gloo
CPU collectives, as the hosts of a pod do over the network. They must train
exactly like 1 process with 4 devices, agree on one checkpoint when only one
of them is preempted, and resume after both are killed.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hpe_jax.runtime import metric_writer
from hpe_jax.runtime import multihost
from launch import local
from tests.conftest import ROOT
from tests.conftest import TINY_FLAGS

STEPS = 18
RUN_FLAGS = [*TINY_FLAGS, f'--config.total_steps={STEPS}',
             '--config.log_every=1', '--config.checkpoint_every=6',
             '--config.eval_every=9']


def main_command(workdir):
  return [sys.executable, '-m', 'hpe_jax.main',
          '--config=configs/hourglass.py:smoke', f'--workdir={workdir}',
          *RUN_FLAGS]


def start(commands, logs):
  procs = []
  for (cmd, env), log in zip(commands, logs):
    with open(log, 'a') as f:
      procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=f,
                                    stderr=subprocess.STDOUT))
  return procs


def logged_steps(workdir):
  path = workdir / metric_writer.METRICS_FILE
  return path.read_text().count('train/loss') if path.exists() else 0


def wait_until(done, procs, timeout=300):
  deadline = time.time() + timeout
  while not done():
    assert time.time() < deadline, 'timed out'
    assert all(p.poll() is None for p in procs), 'a process ended early'
    time.sleep(0.2)


def finish(procs, logs, timeout=300):
  for p in procs:
    p.wait(timeout=timeout)
  outputs = [open(log).read() for log in logs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  return outputs


def losses(workdir):
  return [l['train/loss'] for l in metric_writer.read_metrics(str(workdir))
          if 'train/loss' in l]


def checkpoint_steps(workdir):
  return sorted(int(s) for s in os.listdir(workdir / 'checkpoints')
                if s.isdigit())


@pytest.mark.slow
def test_two_processes_train_like_one_and_survive_preemption_and_kills(
    tmp_path):
  one = tmp_path / 'one_process'
  env = dict(os.environ, JAX_PLATFORMS='cpu', JAX_NUM_CPU_DEVICES='4')
  ref = subprocess.run(main_command(one), cwd=ROOT, env=env, text=True,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300)
  assert ref.returncode == 0, ref.stdout[-3000:]
  assert 'Devices: 4 (cpu), processes: 1' in ref.stdout

  two = tmp_path / 'two_processes'
  commands = local.process_commands(main_command(two), 2, local.free_port(),
                                    cpu_devices_per_process=2)
  logs = [tmp_path / f'process{i}.log' for i in range(2)]

  # Preemption reaches process 1 only: both save the same step and exit.
  procs = start(commands, logs)
  wait_until(lambda: logged_steps(two) >= 3, procs)
  procs[1].send_signal(signal.SIGTERM)
  outputs = finish(procs, logs)
  assert 'Devices: 4 (cpu), processes: 2' in outputs[0]
  saved = {out.split('Preempted: checkpoint saved at step ')[-1].split('.')[0]
           for out in outputs}
  assert len(saved) == 1, outputs[0][-2000:]
  preempted_at = int(saved.pop())
  assert preempted_at < 12 and preempted_at in checkpoint_steps(two)
  # Only process 0 writes logs.
  assert len(os.listdir(two / 'tensorboard')) == 1

  # Both killed without warning, after the next periodic checkpoint.
  procs = start(commands, logs)
  next_save = (preempted_at // 6 + 1) * 6
  wait_until(lambda: next_save in checkpoint_steps(two), procs)
  for p in procs:
    p.kill()
    p.wait()

  procs = start(commands, logs)
  finish(procs, logs)
  assert checkpoint_steps(two)[-1] == STEPS
  reference = losses(one)
  assert len(reference) == STEPS
  # The same to float tolerance while the processes' different summation
  # order has not yet grown, which spans the preemption and the kill; after
  # that the two runs drift apart slowly, as any two reduction orders do.
  np.testing.assert_allclose(losses(two)[:12], reference[:12], rtol=1e-4)
  np.testing.assert_allclose(losses(two), reference, rtol=1e-2)
  # Evaluation over both processes' shares counts each example once.
  evals = [{l['step']: l['eval/pck@0.2_torso']
            for l in metric_writer.read_metrics(str(w))
            if 'eval/pck@0.2_torso' in l} for w in (two, one)]
  assert sorted(evals[0]) == [0, 9, STEPS]
  for step in (0, 9):
    assert evals[0][step] == pytest.approx(evals[1][step], abs=1e-6)


def test_explicit_process_flags_must_come_together():
  with pytest.raises(ValueError, match='missing --num_processes'):
    multihost.initialize('127.0.0.1:1234', 0, 1)
  with pytest.raises(ValueError, match='is not below'):
    multihost.initialize('127.0.0.1:1234', 2, 2)
  with pytest.raises(ValueError, match='HOST:PORT'):
    multihost.initialize('localhost', 2, 0)


def test_cluster_environment_is_read_from_the_scheduler(monkeypatch):
  for name in ('SLURM_NTASKS', 'SLURM_STEP_NODELIST', 'OMPI_COMM_WORLD_SIZE'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(multihost, '_on_tpu_vm', lambda: False)
  assert multihost.cluster_environment() is None
  monkeypatch.setenv('SLURM_NTASKS', '4')
  # The batch script itself, before `srun` starts the tasks.
  assert multihost.cluster_environment() is None
  monkeypatch.setenv('SLURM_STEP_NODELIST', 'node[1-2]')
  assert multihost.cluster_environment() == 'slurm'
  monkeypatch.setenv('SLURM_NTASKS', '1')
  assert multihost.cluster_environment() is None
  monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '2')
  assert multihost.cluster_environment() == 'openmpi'
  monkeypatch.delenv('OMPI_COMM_WORLD_SIZE')
  monkeypatch.setattr(multihost, '_on_tpu_vm', lambda: True)
  assert multihost.cluster_environment() == 'tpu'
