"""Faults that must not lose or mix work: two runs on one workdir, and
training that diverges around a checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hpe_jax.runtime import metric_writer
from hpe_jax.runtime import run_config
from hpe_jax.runtime import workdir_lock
from hpe_jax.training import trainer
from conftest import ROOT, TINY_FLAGS


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


def test_a_held_lock_stops_a_second_holder(tmp_path):
  with workdir_lock.WorkdirLock(str(tmp_path)):
    holder = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
    assert holder['pid'] == os.getpid()
    with pytest.raises(workdir_lock.WorkdirLocked,
                       match=f'pid {os.getpid()}'):
      workdir_lock.WorkdirLock(str(tmp_path)).acquire()
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_a_dead_processes_lock_is_taken_over(tmp_path):
  import socket  # pylint: disable=import-outside-toplevel
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps(
      {'host': socket.gethostname(), 'pid': _dead_pid(), 'started': 'x'}))
  lock = workdir_lock.WorkdirLock(str(tmp_path))
  lock.acquire()
  holder = json.loads((tmp_path / workdir_lock.LOCK_FILE).read_text())
  assert lock.held and holder['pid'] == os.getpid()
  lock.release()
  # Another host's lock is never taken over: its process may be alive.
  (tmp_path / workdir_lock.LOCK_FILE).write_text(json.dumps(
      {'host': 'elsewhere', 'pid': _dead_pid(), 'started': 'x'}))
  with pytest.raises(workdir_lock.WorkdirLocked, match='elsewhere'):
    lock.acquire()


def test_a_second_run_on_a_busy_workdir_stops_at_once(tmp_path):
  first = subprocess.Popen(
      [sys.executable, '-m', 'hpe_jax.main',
       '--config=configs/hourglass.py:smoke', f'--workdir={tmp_path}',
       *TINY_FLAGS, '--config.total_steps=100000', '--config.log_every=1',
       '--config.checkpoint_every=100000'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    metrics = tmp_path / 'metrics.jsonl'
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None and not (
        metrics.exists() and 'train/loss' in metrics.read_text()):
      time.sleep(0.5)
    config_before = (tmp_path / run_config.CONFIG_FILE).read_text()
    second = subprocess.run(
        [sys.executable, '-m', 'hpe_jax.main',
         '--config=configs/cpm.py:smoke', f'--workdir={tmp_path}'],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert f'in use by another run (pid {first.pid}' in second.stderr
    assert 'Traceback' not in second.stderr
    # Nothing of the second run reached the workdir; the first goes on.
    assert (tmp_path / run_config.CONFIG_FILE).read_text() == config_before
    assert first.poll() is None
  finally:
    first.send_signal(signal.SIGTERM)
    output, _ = first.communicate(timeout=240)
  assert first.returncode == 0, output
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_divergence_just_after_a_checkpoint_keeps_it_and_names_it(
    tmp_path, tiny_config):
  # Sound steps 1-3, then a learning rate that wrecks the weights: step 4's
  # update blows them up while its own loss (from before the update) is
  # still fine, so only the loss of the updated weights shows it.
  config = tiny_config(**{
      'optimizer.name': 'sgd', 'optimizer.learning_rate': 1e-3,
      'optimizer.schedule.name': 'step', 'optimizer.schedule.warmup_steps': 0,
      'optimizer.schedule.boundaries': (3,),
      'optimizer.schedule.decay_factor': 1e30,
      'checkpoint_every': 2, 'log_every': 100, 'total_steps': 8})
  with pytest.raises(FloatingPointError,
                     match=r'at step 4\..*last good checkpoint: step 2 in'):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2']
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def test_divergence_before_any_checkpoint_says_there_is_none(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.main',
       '--config=configs/hourglass.py:smoke', f'--workdir={tmp_path}',
       *TINY_FLAGS, '--config.optimizer.learning_rate=1e30',
       '--config.optimizer.schedule.warmup_steps=0', '--config.log_every=1'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert 'last good checkpoint: none yet' in proc.stderr
  assert 'Traceback' not in proc.stderr
  # The line of the step that diverged reached metrics.jsonl.
  lines = metric_writer.read_metrics(str(tmp_path))
  assert lines and not np.isfinite(lines[-1]['train/loss'])
