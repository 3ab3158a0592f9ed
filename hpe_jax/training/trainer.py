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
import json
import math
import time

from absl import logging
from clu import metrics as clu_metrics
from clu import parameter_overview
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.evaluation import keypoint_evaluator
from hpe_jax.evaluation import part_rcnn_evaluator
from hpe_jax.evaluation import pose_mask_evaluator
from hpe_jax.evaluation import segmentation_evaluator
from hpe_jax.models import registry
from hpe_jax.training import checkpointing
from hpe_jax.training import metric_writer
from hpe_jax.training import optimizers
from hpe_jax.training import preemption
from hpe_jax.training import sharding
from hpe_jax.training import storage
from hpe_jax.training import tasks
from hpe_jax.training import train_state

CONFIG_FILE = 'config.json'


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  path = storage.join(workdir, CONFIG_FILE)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if path.exists() and path.read_text() != text:
    logging.warning('%s differs from the config of this run; it is '
                    'replaced by the current one.', path)
  if jax.process_index() == 0:
    path.write_text(text)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir (locked)."""
  path = storage.join(workdir, CONFIG_FILE)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no config; is {workdir!r} a workdir '
                            'of `python -m hpe_jax.main`?')
  fields = _tuples(json.loads(path.read_text()))
  # Fields added since a run was saved, with the value that keeps its
  # meaning: runs from before tasks existed trained keypoint models on their
  # dataset's own skeleton.
  fields.setdefault('task', 'keypoints')
  dataset = fields.get('dataset', {})
  dataset.setdefault('skeleton', '')
  dataset.get('synthetic', {}).setdefault('person_height', (0.25, 1.0))
  config = ml_collections.ConfigDict(fields)
  config.lock()
  return config


def _tuples(tree):
  """JSON turns tuples into lists; configs use tuples for fixed sizes."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree


def build_model(config, skeleton):
  """The model of `config` for the dataset's `skeleton` (or joint count)."""
  model = registry.build(config.model, skeleton)
  if model.output_stride != config.input.output_stride:
    raise ValueError(
        f'{config.model.name} predicts at stride {model.output_stride} but '
        f'input.output_stride is {config.input.output_stride}')
  return model


def init_state(model, tx, config, mesh) -> train_state.TrainState:
  """A fresh, replicated training state."""
  inputs = make_task(config).init_inputs(tuple(config.input.image_size),
                                          model.num_joints, model.dtype)

  def init(rng):
    params_rng, state_rng = jax.random.split(rng)
    variables = model.init(params_rng, **inputs, train=False)
    return train_state.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables['params'],
        batch_stats=variables.get('batch_stats', {}),
        opt_state=tx.init(variables['params']), rng=state_rng)

  return jax.jit(init, out_shardings=sharding.replicated(mesh))(
      jax.random.key_data(jax.random.key(config.seed)))


def make_task(config):
  """The `tasks` object of `config` (its loss and model inputs)."""
  return tasks.make_task(config, pipeline.geometry(config.input).output_size)


def train_step(state: train_state.TrainState, batch, *, model, tx, lr_fn,
               task):
  """One optimisation step on a global batch; returns state and metrics."""
  inputs = task.model_inputs(batch, model.dtype)
  dropout_rng = jax.random.fold_in(state.rng, state.step)
  # The RoI box jitter of part_rcnn; models without it ignore the stream.
  rngs = {'dropout': dropout_rng,
          'jitter': jax.random.fold_in(dropout_rng, 1)}

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
             'learning_rate': lr_fn(state.step)}
  metrics.update({f'loss/{k}': v for k, v in parts.items()})
  return new_state, metrics


def load_trained(config: ml_collections.ConfigDict, workdir: str,
                 checkpoint: str = 'latest'):
  """The model and variables of a run's checkpoint.

  Args:
    config: the run's config (`load_config`), possibly with overrides.
    workdir: the run's workdir.
    checkpoint: 'latest', 'best' (by the run's primary eval metric) or a
      step number.

  Returns:
    (model, variables, step, mesh).
  """
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  if checkpoint == 'latest':
    step = ckpt.latest_step()
  elif checkpoint == 'best':
    step = ckpt.best_step()
  else:
    step = int(checkpoint)
  if step is None:
    raise FileNotFoundError(f'{ckpt.directory}: no {checkpoint} checkpoint')
  mesh = sharding.make_mesh()
  model = build_model(config, datasets.skeleton(config.dataset))
  tx, _ = optimizers.make_optimizer(config.optimizer, config.total_steps)
  state = ckpt.restore(step, init_state(model, tx, config, mesh))
  ckpt.close()
  return model, state.variables, step, mesh


def make_train_step(config, model, tx, lr_fn, mesh):
  """`train_step` jitted over the mesh: state replicated and donated, batch
  sharded."""
  return jax.jit(
      functools.partial(train_step, model=model, tx=tx, lr_fn=lr_fn,
                        task=make_task(config)),
      in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
      out_shardings=sharding.replicated(mesh), donate_argnums=0)


def _load_detections(config, dataset):
  if config.eval.boxes == 'gt':
    return None
  return coco.load_detections(config.eval.boxes, dataset,
                              config.eval.min_detection_score)


def make_evaluator(config, dataset, model, mesh):
  """The evaluator of the config's task over `dataset`."""
  kwargs = dict(model=model, mesh=mesh,
                batch_size=config.input.eval_batch_size)
  if config.task == 'segmentation':
    return segmentation_evaluator.SegmentationEvaluator(
        dataset, config.input, config.eval, target=config.loss.mask_target,
        **kwargs)
  if config.task == 'part_rcnn':
    return part_rcnn_evaluator.PartRCNNEvaluator(
        dataset, config.input, config.eval, **kwargs)
  detections = _load_detections(config, dataset)
  if config.task == 'pose_mask':
    return pose_mask_evaluator.PoseMaskEvaluator(
        dataset, config.input, config.eval, detections=detections,
        **kwargs)
  return keypoint_evaluator.KeypointEvaluator(
      dataset, config.input, config.eval, detections=detections, **kwargs)


class _Averages:
  """Running means of the step metrics between two log lines (clu)."""

  def __init__(self):
    self.values: dict[str, clu_metrics.Average] = {}

  def add(self, metrics) -> None:
    for k, v in metrics.items():
      a = clu_metrics.Average.from_model_output(v)
      self.values[k] = self.values[k].merge(a) if k in self.values else a

  def pop(self) -> dict[str, float]:
    out = {k: float(a.compute()) for k, a in self.values.items()}
    self.values = {}
    return out


def _every(step: int, period: int) -> bool:
  return period > 0 and step % period == 0


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


def _check_finite(loss: float, step: int, last_saved: int | None) -> None:
  if not math.isfinite(loss):
    raise FloatingPointError(
        f'The training loss is {loss} at step {step}. Stopping; the last '
        f'good checkpoint is step {last_saved} (lower the learning rate or '
        'enable optimizer.grad_clip_norm, then re-run to resume from it).')


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains `config` in `workdir`, resuming if it holds checkpoints.

  Returns:
    The metrics of the last evaluation (empty if none ran).
  """
  # Workdir and config.
  storage.join(workdir).mkdir(parents=True, exist_ok=True)
  save_config(config, workdir)

  # Device mesh: one data axis over every device of every process.
  mesh = sharding.make_mesh()
  logging.info('Devices: %d (%s), processes: %d', jax.device_count(),
               jax.devices()[0].platform, jax.process_count())

  # Input pipelines.
  train_data = datasets.build(config.dataset, 'train')
  eval_data = datasets.build(config.dataset, 'eval')
  skeleton = train_data.skeleton
  local_batch = sharding.per_process_batch_size(config.input.batch_size, mesh)
  train_iter = iter(pipeline.train_dataset(
      train_data, config.input, seed=config.seed, batch_size=local_batch,
      shard_index=jax.process_index(), shard_count=jax.process_count()))

  # Model, optimizer and state.
  model = build_model(config, skeleton)
  tx, lr_fn = optimizers.make_optimizer(config.optimizer, config.total_steps)
  state = init_state(model, tx, config, mesh)

  # Where to start: resume > init_from > scratch.
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  start = ckpt.latest_step()
  if start is not None:
    state = ckpt.restore(start, state, train_iter)
    logging.info('Resumed from %s at step %d', ckpt.directory, start)
  elif config.init_from:
    state = checkpointing.load_weights(config.init_from, state)
  start = start or 0
  writer = metric_writer.MetricWriter(workdir, resume_step=start)
  if start == 0:
    overview = parameter_overview.get_parameter_overview(state.params)
    logging.info('Parameters:\n%s', overview)
    writer.write_text(0, 'parameters', f'```\n{overview}\n```')
    writer.write_text(0, 'config', f'```\n{config}\n```')

  step_fn = make_train_step(config, model, tx, lr_fn, mesh)

  evaluator = make_evaluator(config, eval_data, model, mesh)

  def run_eval(step):
    t0 = time.perf_counter()
    metrics, previews = evaluator.evaluate(state.variables)
    writer.write_scalars(step, {f'eval/{k}': v for k, v in metrics.items()})
    if previews:
      writer.write_images(step, {'eval/predictions': np.stack(previews)})
    logging.info('Step %d eval (%d examples, %.1fs): %s', step,
                 evaluator.count, time.perf_counter() - t0,
                 ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()))
    return metrics

  # The loop.
  total = config.total_steps
  averages = _Averages()
  last_metrics, final_eval = None, {}
  last_saved = start or None
  if start >= config.total_steps:
    logging.info('The run already reached total_steps=%d.', start)
  if start == 0 and config.eval_at_start:
    final_eval = run_eval(0)
  t_log, step_log = time.perf_counter(), start
  with preemption.PreemptionWatcher() as watcher:
    for step in range(start + 1, total + 1):
      batch = sharding.to_global(next(train_iter), mesh)
      state, last_metrics = step_fn(state, batch)
      averages.add(last_metrics)

      if _every(step, config.log_every) or step == total:
        train = averages.pop()
        _check_finite(train['loss'], step, last_saved)
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

      evaluate = _every(step, config.eval_every) or step == total
      preempted = watcher.reached(step)
      if evaluate or preempted or _every(step, config.checkpoint_every):
        _check_finite(float(last_metrics['loss']), step, last_saved)
        metric = None
        if evaluate:
          final_eval = run_eval(step)
          metric = final_eval.get(evaluator.primary_metric)
        # The logs must hold every step up to a checkpoint: a run killed
        # after it resumes from there and will not log those steps again.
        writer.flush()
        ckpt.save(step, state, train_iter, metric)
        last_saved = step
      if preempted:
        logging.warning('Preempted: checkpoint saved at step %d. Re-run the '
                        'same command to resume.', step)
        break
  ckpt.wait()
  ckpt.close()
  writer.close()
  return final_eval
