"""Faults that must not lose, mix or hang on work: two runs on one
workdir; training that diverges around a checkpoint (stopping, or rolling
back past the bad batches); damaged evaluation images; SIGTERM during the
preemption save; a user's mistakes on the command line. Damaged and
failing checkpoints are in test_checkpoint_faults.py, damaged and all
damaged input in test_pipeline.py, damaged predict inputs in
test_commands.py."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax.data import datasets
from hpe_jax.data import example
from hpe_jax.data import pipeline
from hpe_jax.data import synthetic
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


def _poison_batches(monkeypatch, draws):
  """Training batches number `draws` (1-based, in drawing order) get NaN
  keypoints, so the loss of the step that trains on them is NaN."""
  original = pipeline.train_dataset
  drawn = {'count': 0}

  def poison(batch):
    drawn['count'] += 1
    if drawn['count'] in draws:
      batch['keypoints'] = batch['keypoints'].copy()
      batch['keypoints'][..., :2] = np.nan
    return batch

  monkeypatch.setattr(trainer.pipeline, 'train_dataset',
                      lambda *a, **k: original(*a, **k).map(poison))
  return drawn


def test_a_rollback_skips_the_batches_that_diverged(
    tmp_path, tiny_config, monkeypatch, caplog):
  drawn = _poison_batches(monkeypatch, {4})
  config = tiny_config(checkpoint_every=2, log_every=1,
                       divergence_rollbacks=1)
  with caplog.at_level(logging.WARNING):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert 'rolled back to checkpoint 2' in caplog.text
  # Steps 3 and 4 were trained again on batches 5 and 6: 10 drawn for 8.
  assert drawn['count'] == 10
  lines = metric_writer.read_metrics(str(tmp_path))
  steps = [l['step'] for l in lines if 'train/loss' in l]
  assert steps == list(range(1, 9))
  assert all(np.isfinite(l['train/loss']) for l in lines if 'train/loss' in l)
  assert '8' in os.listdir(tmp_path / 'checkpoints')


def test_rollbacks_are_capped(tmp_path, tiny_config, monkeypatch):
  # Batch 6 is step 4 again after the first roll-back to step 2.
  _poison_batches(monkeypatch, {4, 6})
  config = tiny_config(checkpoint_every=2, log_every=1,
                       divergence_rollbacks=1)
  with pytest.raises(errors.TrainingDiverged,
                     match=r'is nan at step 4\..*checkpoint: step 2 in'):
    trainer.train_and_evaluate(config, str(tmp_path))


def test_damaged_evaluation_images_are_counted_not_fatal(
    tmp_path, tiny_config, monkeypatch):
  build = datasets.build
  damaged_people = {}

  def build_with_damage(cfg, split):
    dataset = build(cfg, split)
    if split != 'eval':
      return dataset
    load = dataset.load_pixels

    def load_pixels(index, annotation):
      if index in (0, 3):
        raise example.DamagedSampleError(f'eval/{index}.jpg', 'truncated')
      return load(index, annotation)

    dataset.load_pixels = load_pixels
    damaged_people['count'] = sum(
        len(dataset.annotation(i)['boxes']) for i in (0, 3))
    return dataset

  monkeypatch.setattr(trainer.datasets, 'build', build_with_damage)
  metrics = trainer.train_and_evaluate(
      tiny_config(total_steps=4, eval_every=2), str(tmp_path))
  assert metrics['damaged_examples'] == damaged_people['count'] > 0
  evals = [l for l in metric_writer.read_metrics(str(tmp_path))
           if 'eval/damaged_examples' in l]
  assert [l['step'] for l in evals] == [2, 4]
  assert all(np.isfinite(l['eval/pck@0.2_torso']) for l in evals)


_SIGTERM_AROUND_THE_SAVE = '''
import os, signal, sys
sys.path.insert(0, 'tests')
import conftest
from hpe_jax.runtime import checkpointing
from hpe_jax.training import trainer

wait = checkpointing.Checkpointer.wait
def wait_under_fire(self):
  # Another SIGTERM while the preemption checkpoint is being written.
  os.kill(os.getpid(), signal.SIGTERM)
  wait(self)
checkpointing.Checkpointer.wait = wait_under_fire

train_dataset = trainer.pipeline.train_dataset
def signal_at_third(batch, drawn=[0]):
  drawn[0] += 1
  if drawn[0] == 3:
    os.kill(os.getpid(), signal.SIGTERM)
  return batch
trainer.pipeline.train_dataset = (
    lambda *a, **k: train_dataset(*a, **k).map(signal_at_third))
trainer.train_and_evaluate(conftest.make_tiny_config(
    total_steps=100, checkpoint_every=1000), sys.argv[1])
print('returned')
'''


def test_a_second_sigterm_during_the_preemption_save_is_absorbed(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-c', _SIGTERM_AROUND_THE_SAVE, str(tmp_path)],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  output = proc.stdout + proc.stderr
  assert proc.returncode == 0 and 'returned' in proc.stdout, output
  assert output.count('Received signal 15') >= 2
  assert 'Preempted: checkpoint saved at step 3' in output
  assert os.listdir(tmp_path / 'checkpoints') == ['3']
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()


def _command(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('flags,message', [
    (['--config=configs/hourglass.py:smoke', '--config.no_such_key=1'],
     "--config.no_such_key: the config has no key 'no_such_key'"),
    (['--config=configs/no_such_recipe.py'],
     "No such file or directory: 'configs/no_such_recipe.py'"),
    (['--config=configs/hourglass.py:smoke', '--config.input.batch_size=x'],
     'flag --config.input.batch_size=x: invalid literal'),
    (['--config=configs/hourglass.py:smoke,no_such_arg'],
     "unknown config argument(s) ['no_such_arg']"),
    (['--config=configs/hourglass.py:smoke', *TINY_FLAGS,
      '--config.input.min_keypoints=18'],
     'synthetic: no training examples'),
])
def test_a_users_mistake_is_one_line_and_writes_nothing(
    tmp_path, flags, message):
  workdir = tmp_path / 'run'
  proc = _command('hpe_jax.main', f'--workdir={workdir}', *flags)
  assert proc.returncode == 1, proc.stderr
  assert message in proc.stderr and 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith('hpe_jax.main: ')
  if 'min_keypoints' not in ' '.join(flags):
    assert not workdir.exists()


def test_predict_checks_its_inputs_before_loading_the_model(
    tmp_path, tiny_config):
  # A workdir with a config but no checkpoint: loading a model would fail.
  run_config.save_config(tiny_config(), str(tmp_path))
  (tmp_path / 'empty').mkdir()
  for given, message in [(tmp_path / 'empty', 'no .jpg/.jpeg/.png/.bmp'),
                         (tmp_path / 'missing', 'no such image file')]:
    proc = _command('hpe_jax.predict', f'--workdir={tmp_path}',
                    f'--input={given}', f'--output={tmp_path / "out"}')
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr
  proc = _command('hpe_jax.evaluate', f'--workdir={tmp_path / "empty"}')
  assert proc.returncode == 1 and 'not a training run' in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_a_dataset_of_damaged_images_stops_the_run_with_one_line(tmp_path):
  synthetic.export(str(tmp_path / 'data'), 6, seed=1, image_size=(64, 64))
  for image in (tmp_path / 'data' / 'images').iterdir():
    image.write_bytes(b'not a JPEG')
  proc = _command(
      'hpe_jax.main', '--config=configs/hourglass.py:smoke',
      f'--workdir={tmp_path / "run"}', *TINY_FLAGS,
      '--config.dataset.name=coco', f'--config.dataset.root={tmp_path}',
      '--config.dataset.coco.train_annotations=data/annotations.json',
      '--config.dataset.coco.eval_annotations=data/annotations.json',
      '--config.dataset.coco.train_images=data/images',
      '--config.dataset.coco.eval_images=data/images',
      '--config.input.max_consecutive_damaged=10', timeout=120)
  assert proc.returncode == 1, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('hpe_jax.main: 10 damaged samples in a row')
  assert 'image file cannot be decoded' in last
  assert 'Traceback' not in proc.stderr


_STUCK_INPUT = '''
import contextlib, os, signal, sys, threading, time
sys.path.insert(0, 'tests')
import conftest
from hpe_jax import cli
from hpe_jax import main
from hpe_jax.data import datasets
from hpe_jax.runtime import preemption

# Since when the training loop has been waiting for its next batch.
waiting_since = [None]
wait_for_input = preemption.PreemptionWatcher.waiting_for_input
@contextlib.contextmanager
def watched_wait(self):
  with wait_for_input(self):
    waiting_since[0] = time.monotonic()
    try:
      yield
    finally:
      waiting_since[0] = None
preemption.PreemptionWatcher.waiting_for_input = watched_wait

build = datasets.build
stuck = threading.Event()
def stuck_build(cfg, split):
  dataset = build(cfg, split)
  load, loads = dataset.load_pixels, [0]
  def load_pixels(index, annotation):
    loads[0] += 1
    if split == 'train' and loads[0] > 40:
      stuck.set()
      time.sleep(3600)  # as on a hung network file system
    return load(index, annotation)
  dataset.load_pixels = load_pixels
  return dataset
datasets.build = stuck_build

def preempt_twice():
  # The input threads run ahead of the loop: wait until the loop itself is
  # blocked on the stuck input, not still compiling its first step.
  stuck.wait()
  while True:
    since = waiting_since[0]
    if since is not None and time.monotonic() - since > 2:
      break
    time.sleep(0.2)
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(1)
  os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=preempt_twice, daemon=True).start()
sys.argv = ['hpe_jax.main', '--config=configs/hourglass.py:smoke',
            '--workdir=' + sys.argv[1], *conftest.TINY_FLAGS,
            '--config.total_steps=1000']
cli.run(main.main)
'''


def test_a_second_sigterm_stops_a_run_stuck_on_its_input(tmp_path):
  proc = subprocess.run([sys.executable, '-c', _STUCK_INPUT, str(tmp_path)],
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 1, proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith('hpe_jax.main: signal 15 received again while '
                         'waiting for input')
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / workdir_lock.LOCK_FILE).exists()
