"""The training loop: train, evaluate, checkpoint, resume.

`train_and_evaluate(config, workdir)` is what ``python -m hpe_jax.main`` runs.
Its sections, in order: workdir and config; device mesh; input pipelines;
model, optimizer and state; where to start (resume > init_from > scratch);
the jitted train step; the evaluator; the loop with logging, evaluation,
checkpoints, preemption and NaN checks.

The workdir holds everything a run produced: ``config.json`` (the resolved
config), ``checkpoints/<step>/``, ``tensorboard/`` and ``metrics.jsonl``; it
may be a bucket path (`storage`).
Re-running the same command with the same workdir resumes: the model,
optimizer, step, RNG and the input iterator's position come back, so an
interrupted and resumed run ends with the same parameters as an
uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import time

from absl import logging
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hpe_jax import errors
from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.models import registry
from hpe_jax.runtime import checkpointing
from hpe_jax.runtime import metric_writer
from hpe_jax.runtime import preemption
from hpe_jax.runtime import run_config
from hpe_jax.runtime import sharding
from hpe_jax.runtime import storage
from hpe_jax.runtime import workdir_lock
from hpe_jax.training import optimizers
from hpe_jax.training import train_state


def train_step(state: train_state.TrainState, batch, metric_sums, *, model,
               tx, lr_fn, task):
  """One optimisation step on a global batch.

  Returns the new state and `metric_sums` plus this step's metrics: the
  loop fetches the sums only when it logs, so no step waits for the host.
  """
  inputs = task.model_inputs(batch, model.dtype)
  rngs = task.train_rngs(jax.random.fold_in(state.rng, state.step))

  def loss_fn(params):
    out, updated = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, **inputs,
        train=True, mutable=['batch_stats'], rngs=rngs)
    # Targets are made here, on the device, from the warped labels.
    loss, parts = task.loss(out, batch)
    return loss, (parts, updated['batch_stats'])

  (loss, (parts, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats, opt_state=opt_state)
  metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads),
             'learning_rate': lr_fn(state.step),
             'damaged_examples': batch['damaged'].sum()}
  metrics.update({f'loss/{k}': v for k, v in parts.items()})
  metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
  if metric_sums is None:
    return new_state, metrics
  return new_state, jax.tree.map(jnp.add, metric_sums, metrics)


def make_train_step(config, model, tx, lr_fn, mesh):
  """`train_step` jitted over the mesh: state replicated and donated, batch
  sharded, metric sums replicated and donated."""
  replicated = sharding.replicated(mesh)
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, lr_fn=lr_fn,
                        task=tasks.make(config)),
      in_shardings=(replicated, sharding.batch_sharding(mesh), replicated),
      out_shardings=replicated, donate_argnums=(0, 2))


def loss_after_step(state, batch, *, model, task):
  """The loss the parameters of `state` give on `batch`: what the next step
  starts from. A checkpoint is only saved when it is finite."""
  rngs = task.train_rngs(jax.random.fold_in(state.rng, state.step))
  out, _ = model.apply(state.variables, **task.model_inputs(batch,
                                                           model.dtype),
                       train=True, mutable=['batch_stats'], rngs=rngs)
  return task.loss(out, batch)[0]


def zero_metric_sums(step_fn, state, batch):
  """Zeros shaped like the metrics of `step_fn` (traced, not run)."""
  _, metrics = jax.eval_shape(step_fn, state, batch, None)
  return jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), metrics)


class _MetricSums:
  """The step metrics summed on the device between two log lines.

  Means are logged, except for counts (`_TOTALS`), which are totals.
  """

  _TOTALS = ('damaged_examples',)

  def __init__(self, step_fn, state, batch, mesh):
    self._zeros = jax.device_put(zero_metric_sums(step_fn, state, batch),
                                 sharding.replicated(mesh))
    self.sums = self._fresh()
    self.count = 0

  def _fresh(self):
    return jax.tree.map(jnp.copy, self._zeros)

  def pop(self) -> dict[str, float]:
    """The means (and totals) since the last `pop`, in one transfer."""
    host = jax.device_get(self.sums)
    means = {k: float(v) / (1 if k in self._TOTALS else max(self.count, 1))
             for k, v in host.items()}
    self.sums, self.count = self._fresh(), 0
    return means


def _every(step: int, period: int) -> bool:
  return period > 0 and step % period == 0


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


@jax.jit
def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.isfinite(x).all()
                            for x in jax.tree.leaves(tree)]))


def _divergence(metrics: dict, state=None, next_loss: float = 0.0
                ) -> str | None:
  """What stopped being finite, or None: the loss or gradient norm of
  `metrics` (sums since the last log line: NaN if any step's was) or, when
  given before a save, the parameters of `state` or `next_loss` (the loss
  of those parameters)."""
  loss, grad_norm = float(metrics['loss']), float(metrics['grad_norm'])
  if not math.isfinite(loss):
    return f'loss is {loss}'
  if not math.isfinite(grad_norm):
    return f'gradient norm is {grad_norm}'
  if state is not None and not bool(_all_finite(state.params)):
    return 'updated parameters are not finite'
  if not math.isfinite(next_loss):
    return f'loss of the updated parameters is {next_loss}'
  return None


def _stop_diverged(step: int, what: str, ckpt, writer) -> None:
  """Stops a diverged run without saving it. In-flight saves finish first,
  so the message names a checkpoint that exists; the metrics logged so far
  are flushed to ``metrics.jsonl``."""
  ckpt.wait()
  writer.flush()
  good = ckpt.latest_step()
  last = (f'step {good} in {ckpt.directory}' if good is not None else
          'none yet, so a re-run starts from scratch')
  raise errors.TrainingDiverged(
      f'The training {what} at step {step}. Stopping without saving it; the '
      f'last good checkpoint: {last}. Lower the learning rate, enable '
      'optimizer.grad_clip_norm or set divergence_rollbacks, then re-run '
      'the same command.')


def _roll_back(ckpt, template):
  """(step, state) of the latest intact checkpoint, None if there is none.
  """
  ckpt.wait()
  # The state only: the input goes on past the batches that diverged.
  step, state = ckpt.restore_latest(template, move_damaged=True)
  return None if step is None else (step, state)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming if it holds checkpoints.

  The workdir is locked for the run (`workdir_lock`): a second run on it
  stops with `workdir_lock.WorkdirLocked` before writing anything.

  Returns:
    The metrics of the last evaluation (empty if none ran).
  """
  storage.join(workdir).mkdir(parents=True, exist_ok=True)
  with workdir_lock.WorkdirLock(workdir):
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config, workdir):
  run_config.save_config(config, workdir)

  # Device mesh: one data axis over every device of every process.
  mesh = sharding.make_mesh()
  logging.info('Devices: %d (%s), processes: %d', jax.device_count(),
               jax.devices()[0].platform, jax.process_count())

  # Input pipelines, checked for the labels the task trains on.
  task = tasks.make(config)
  train_data = datasets.build(config.dataset, 'train')
  eval_data = datasets.build(config.dataset, 'eval')
  skeleton = train_data.skeleton
  local_batch = sharding.per_process_batch_size(config.input.batch_size, mesh)
  train_iter = iter(pipeline.train_dataset(
      train_data, config.input, seed=config.seed, batch_size=local_batch,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      labels=task.training_labels(config)))

  # Model, optimizer and state.
  model = registry.build_for_run(config, skeleton)
  tx, lr_fn = optimizers.make_optimizer(config.optimizer, config.total_steps)

  # Where to start: resume > init_from > scratch.
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  # The newest intact checkpoint; damaged newer ones are moved aside.
  start, state = ckpt.restore_latest(
      train_state.abstract(model, tx, task, config, mesh), train_iter,
      move_damaged=True)
  if start is not None:
    logging.info('Resumed from %s at step %d', ckpt.directory, start)
  else:
    state = train_state.create(model, tx, task, config, mesh)
    if config.init_from:
      state = checkpointing.load_weights(config.init_from, state)
  start = start or 0
  writer = metric_writer.MetricWriter(workdir, resume_step=start)
  if start == 0:
    overview = parameter_overview.get_parameter_overview(state.params)
    logging.info('Parameters:\n%s', overview)
    writer.write_text(0, 'parameters', f'```\n{overview}\n```')
    writer.write_text(0, 'config', f'```\n{config}\n```')

  step_fn = make_train_step(config, model, tx, lr_fn, mesh)
  next_loss_fn = jax.jit(
      functools.partial(loss_after_step, model=model, task=task),
      in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)))
  evaluator = task.make_evaluator(config, eval_data, model, mesh)

  def run_eval(step):
    t0 = time.perf_counter()
    metrics, previews = evaluator.evaluate(state.variables)
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    if previews:
      writer.write_images(step, {'eval/predictions': np.stack(previews)})
    logging.info('Step %d eval (%d examples, %.1fs): %s', step,
                 evaluator.count, time.perf_counter() - t0,
                 # Per-joint / per-class figures are in metrics.jsonl.
                 ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()
                           if '/' not in k))
    return metrics

  # The loop.
  total = config.total_steps
  final_eval, averages = {}, None
  rollbacks_left = config.divergence_rollbacks
  if start >= config.total_steps:
    logging.info('The run already reached total_steps=%d.', start)
  if start == 0 and config.eval_at_start:
    final_eval = run_eval(0)
  step = step_log = start
  t_log, preempted = time.perf_counter(), False
  with preemption.PreemptionWatcher() as watcher:
    while step < total:
      step += 1
      with watcher.waiting_for_input():
        batch = sharding.to_global(next(train_iter), mesh)
      if averages is None:
        averages = _MetricSums(step_fn, state, batch, mesh)
      # Everything the step reads is already on the devices: a host value
      # slipping in (a per-step copy over the bus) is an error, not a
      # silent slowdown.
      with jax.transfer_guard('disallow'):
        state, averages.sums = step_fn(state, batch, averages.sums)
      averages.count += 1

      diverged = None
      if _every(step, config.log_every) or step == total:
        train = averages.pop()
        now = time.perf_counter()
        steps_per_sec = (step - step_log) / (now - t_log)
        t_log, step_log = now, step
        train['steps_per_sec'] = steps_per_sec
        train['examples_per_sec'] = steps_per_sec * config.input.batch_size
        writer.write_scalars(step, {f'train/{k}': v for k, v in train.items()})
        logging.info('Step %d/%d: loss %.6f, lr %.3g, %.2f steps/s, ETA %s',
                     step, total, train['loss'], train['learning_rate'],
                     steps_per_sec,
                     _duration((total - step) / max(steps_per_sec, 1e-9)))
        diverged = _divergence(train)

      evaluate = _every(step, config.eval_every) or step == total
      preempted = watcher.reached(step)
      save = evaluate or preempted or _every(step, config.checkpoint_every)
      if save and not diverged:
        diverged = _divergence(jax.device_get(averages.sums), state,
                               float(next_loss_fn(state, batch)))
      if diverged:
        good = None
        if rollbacks_left:
          good = _roll_back(
              ckpt, train_state.abstract(model, tx, task, config, mesh))
        if good is None:
          _stop_diverged(step, diverged, ckpt, writer)
        rollbacks_left -= 1
        logging.warning(
            'The training %s at step %d: rolled back to checkpoint %d; the '
            'batches of steps %d-%d are skipped (%d roll-backs left).',
            diverged, step, good[0], good[0] + 1, step, rollbacks_left)
        step, state = good
        # The lines of the abandoned steps leave the logs, as on a resume.
        writer.close()
        writer = metric_writer.MetricWriter(workdir, resume_step=step)
        averages, step_log, t_log = None, step, time.perf_counter()
        continue
      if save:
        metric = None
        if evaluate:
          final_eval = run_eval(step)
          metric = final_eval.get(evaluator.primary_metric)
        # The logs must hold every step up to a checkpoint: a run killed
        # after it resumes from there and will not log those steps again.
        writer.flush()
        ckpt.save(step, state, train_iter, metric)
      if preempted:
        break
    # Inside the watcher: a SIGTERM arriving while the last save is written
    # must not kill the process before the checkpoint is final.
    ckpt.wait()
  if preempted:
    logging.warning('Preempted: checkpoint saved at step %d. Re-run the same '
                    'command to resume.', step)
  ckpt.close()
  writer.close()
  return final_eval
