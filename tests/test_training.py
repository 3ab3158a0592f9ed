"""The training loop: learning, exact resume, preemption, NaN, init_from.

Runs are tiny (a one-stack hourglass of 16 features on 32x32 crops of the
synthetic people) so each takes seconds on a CPU.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.models import registry
from hpe_jax.runtime import metric_writer
from hpe_jax.runtime import preemption
from hpe_jax.runtime import run_config
from hpe_jax.runtime import sharding
from hpe_jax.training import optimizers
from hpe_jax.training import train_state
from hpe_jax.training import trainer
from conftest import ROOT, TINY_FLAGS


def final_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), 'state'))
  return restored['params']


def assert_trees_equal(a, b):
  flat_a, flat_b = (dict(_flatten(t)) for t in (a, b))
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=k)


def _flatten(tree, prefix=''):
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield from _flatten(v, f'{prefix}/{k}')
  else:
    yield prefix, np.asarray(tree)


@pytest.mark.slow
def test_loss_falls_and_metric_rises(tmp_path, tiny_config):
  config = tiny_config(**{
      'total_steps': 200, 'log_every': 25, 'eval_at_start': True,
      'model.features': 32, 'model.depth': 2, 'input.image_size': (64, 64),
      'input.batch_size': 16, 'dataset.synthetic.num_train': 400,
      'dataset.synthetic.num_eval': 24, 'dataset.synthetic.image_size':
      (96, 96), 'codec.sigma': 1.0})
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  lines = metric_writer.read_metrics(str(tmp_path))
  losses = [l['train/loss'] for l in lines if 'train/loss' in l]
  first_eval = lines[0]['eval/pck@0.2_torso']
  # The first logged loss already averages 25 steps; from the all-zero
  # baseline the heatmap loss falls slowly, PCK much more visibly (0.007 to
  # about 0.1 after 150 steps when this was written).
  assert losses[-1] < 0.93 * losses[0], losses
  assert metrics['pck@0.2_torso'] > first_eval + 0.05, (first_eval, metrics)
  for name in ('config.json', 'metrics.jsonl', 'tensorboard'):
    assert (tmp_path / name).exists(), name


def test_interrupted_and_resumed_run_equals_uninterrupted(
    tmp_path, monkeypatch, tiny_config):
  config = tiny_config()
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))

  calls = {'n': 0}

  def preempt_after_three_steps(self, step):
    del self, step
    calls['n'] += 1
    return calls['n'] == 3

  with monkeypatch.context() as m:
    m.setattr(preemption.PreemptionWatcher, 'reached',
              preempt_after_three_steps)
    trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  steps = sorted(int(s) for s in os.listdir(tmp_path / 'resumed' /
                                            'checkpoints'))
  assert steps == [3]  # saved where it was stopped
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))

  assert_trees_equal(final_params(tmp_path / 'straight', 8),
                     final_params(tmp_path / 'resumed', 8))
  straight = metric_writer.read_metrics(str(tmp_path / 'straight'))
  resumed = metric_writer.read_metrics(str(tmp_path / 'resumed'))
  assert [l['step'] for l in resumed] == [l['step'] for l in straight]
  assert resumed[-1]['train/loss'] == straight[-1]['train/loss']


def test_nan_loss_stops_with_a_clear_message_and_no_bad_checkpoint(
    tmp_path, tiny_config):
  # The first update with this learning rate blows the weights up, so the
  # loss of step 2 is no longer finite.
  config = tiny_config(**{'optimizer.learning_rate': 1e30,
                          'optimizer.schedule.warmup_steps': 0,
                          'log_every': 1})
  with pytest.raises(FloatingPointError, match='step 2.*last good'):
    trainer.train_and_evaluate(config, str(tmp_path))
  checkpoints = tmp_path / 'checkpoints'
  assert not checkpoints.exists() or not os.listdir(checkpoints)


def test_bfloat16_compute_trains_with_float32_parameters(tmp_path,
                                                        tiny_config):
  config = tiny_config(**{'model.dtype': 'bfloat16', 'total_steps': 4})
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics['pck@0.2_torso'])
  params = final_params(tmp_path, 4)
  kernel = params['head_0']['heatmaps']['kernel']
  assert kernel.dtype == np.float32


def test_init_from_copies_weights_but_not_the_step(tmp_path, tiny_config):
  trainer.train_and_evaluate(tiny_config(), str(tmp_path / 'first'))
  config = tiny_config(**{'init_from': str(tmp_path / 'first'),
                          'optimizer.learning_rate': 0.0, 'total_steps': 1,
                          'checkpoint_every': 1})
  trainer.train_and_evaluate(config, str(tmp_path / 'second'))
  assert os.listdir(tmp_path / 'second' / 'checkpoints') == ['1']
  assert_trees_equal(final_params(tmp_path / 'first', 8),
                     final_params(tmp_path / 'second', 1))


def run_main(workdir, *flags, env=None, **kwargs):
  cmd = [sys.executable, '-m', 'hpe_jax.main',
         '--config=configs/hourglass.py:smoke', f'--workdir={workdir}',
         *TINY_FLAGS, *flags]
  full_env = dict(os.environ, **(env or {}))
  return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kwargs)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  proc = run_main(tmp_path, '--config.total_steps=100000',
                  '--config.log_every=1', '--config.checkpoint_every=100000')
  metrics = tmp_path / 'metrics.jsonl'
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and metrics.read_text().count('train/loss') >= 2:
      break
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  output, _ = proc.communicate(timeout=240)
  assert proc.returncode == 0, output
  steps = [int(s) for s in os.listdir(tmp_path / 'checkpoints')]
  assert len(steps) == 1 and steps[0] >= 2, output
  assert 'Preempted: checkpoint saved' in output


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  losses = {}
  for devices in (1, 8):
    workdir = tmp_path / str(devices)
    env = {'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices}',
           'JAX_PLATFORMS': 'cpu',
           # The opt-in compilation cache keeps even these small programs.
           'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
    proc = run_main(workdir, '--config.total_steps=4',
                    '--config.log_every=1',
                    f'--compilation_cache={tmp_path / "cache"}', env=env)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert f'Devices: {devices} ' in output
    losses[devices] = [l['train/loss'] for l in
                       metric_writer.read_metrics(str(workdir))
                       if 'train/loss' in l]
  assert len(losses[1]) == 4
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4)
  assert os.listdir(tmp_path / 'cache')


def test_saved_config_reloads_identically(tmp_path, tiny_config):
  config = tiny_config()
  run_config.save_config(config, str(tmp_path))
  reloaded = run_config.load_config(str(tmp_path))
  assert json.loads(reloaded.to_json()) == json.loads(config.to_json())
  assert reloaded.input.image_size == (32, 32)


def test_config_saved_by_an_older_version_loads_as_before(tmp_path,
                                                           tiny_config):
  fields = json.loads(tiny_config().to_json())
  del fields['task'], fields['dataset']['skeleton']
  del fields['dataset']['synthetic']['person_height']
  del fields['dataset']['coco']['skip_empty_images']
  (tmp_path / run_config.CONFIG_FILE).write_text(json.dumps(fields))
  reloaded = run_config.load_config(str(tmp_path))
  assert reloaded.task == 'keypoints' and reloaded.dataset.skeleton == ''
  assert json.loads(reloaded.to_json()) == json.loads(
      tiny_config().to_json())


def test_train_step_reads_nothing_from_the_host(tiny_config):
  """The trainer runs its step under a transfer guard; here the same step
  runs clean, and a batch left on the host trips the guard."""
  config = tiny_config()
  mesh = sharding.make_mesh()
  data = datasets.build(config.dataset, 'train')
  model = registry.build_for_run(config, data.skeleton)
  tx, lr_fn = optimizers.make_optimizer(config.optimizer, config.total_steps)
  state = train_state.create(model, tx, tasks.make(config), config, mesh)
  host_batch = next(iter(pipeline.train_dataset(
      data, config.input, seed=0, batch_size=config.input.batch_size)))
  batch = sharding.to_global(host_batch, mesh)
  step_fn = trainer.make_train_step(config, model, tx, lr_fn, mesh)
  sums = jax.device_put(trainer.zero_metric_sums(step_fn, state, batch),
                        sharding.replicated(mesh))
  with jax.transfer_guard('disallow'):
    for _ in range(2):
      state, sums = step_fn(state, batch, sums)
  assert int(state.step) == 2 and np.isfinite(float(sums['loss']))
  with jax.transfer_guard('disallow'), pytest.raises(
      Exception, match='(?i)disallowed'):
    step_fn(state, host_batch, sums)


def test_config_with_the_old_sigma_and_decode_fields_loads_into_the_codec(
    tmp_path, tiny_config):
  fields = json.loads(tiny_config().to_json())
  del fields['codec']
  fields['loss']['sigma'] = 1.5
  fields['eval']['decode'] = 'quarter'
  (tmp_path / run_config.CONFIG_FILE).write_text(json.dumps(fields))
  reloaded = run_config.load_config(str(tmp_path))
  assert (reloaded.codec.sigma, reloaded.codec.decode) == (1.5, 'quarter')
  assert 'sigma' not in reloaded.loss and 'decode' not in reloaded.eval
