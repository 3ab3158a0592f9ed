"""Orbax checkpoints of a run: state, input position and eval metric.

A run's checkpoints live in ``WORKDIR/checkpoints/<step>/`` with two items:
``state`` (the `TrainState`: step, params, BatchNorm statistics, optimizer
state, RNG) and ``data`` (the Grain iterator's position), so a resumed run
continues exactly where the interrupted one was. The last ``keep``
checkpoints are kept, plus the best one by the run's primary eval metric.

Where a run starts from (`start_point`), in order of precedence:

1. resume: the workdir already has checkpoints; continue from the latest;
2. ``config.init_from``: weights (params and BatchNorm statistics only) of
   another run's checkpoint: a workdir, its ``checkpoints/`` folder or one
   ``checkpoints/<step>`` folder; optimizer, step and data start fresh;
3. scratch.
"""

from __future__ import annotations

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy

from hpe_jax.runtime import storage

CHECKPOINT_DIR = 'checkpoints'
_ITEMS = ('state', 'data')


def _manager(directory: str, keep: int = 0, best_mode: str = 'max',
             read_only: bool = False) -> ocp.CheckpointManager:
  policies = [preservation_policy.LatestN(keep or None)]
  if keep:
    # Only checkpoints saved with an eval metric compete for "best".
    policies.append(preservation_policy.BestN(
        get_metric_fn=lambda m: m['value'], reverse=best_mode == 'min', n=1,
        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation_policy.AnyPreservationPolicy(policies),
      # Orbax writes a checkpoint's metrics to disk only with a best_fn; the
      # preservation policy above is what decides what is kept.
      best_fn=lambda m: m['value'], best_mode=best_mode,
      read_only=read_only, create=not read_only)
  return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpointer:
  """Saves and restores the checkpoints of one workdir."""

  def __init__(self, workdir: str, keep: int = 3, best_mode: str = 'max'):
    self.directory = str(storage.join(workdir, CHECKPOINT_DIR))
    self.best_mode = best_mode
    self.manager = _manager(self.directory, keep, best_mode)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The kept step with the best eval metric (None if none has one)."""
    scored = [(m['value'], s) for s in self.manager.all_steps()
              if (m := self.manager.metrics(s)) and 'value' in m]
    if not scored:
      return None
    pick = max if self.best_mode == 'max' else min
    return pick(scored)[1]

  def save(self, step: int, state, data_iterator, metric: float | None = None):
    """Saves asynchronously; `metric` ranks the checkpoint for "best"."""
    self.manager.save(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iterator)),
        metrics=None if metric is None else {'value': float(metric)},
        force=True)

  def restore(self, step: int, state_template, data_iterator=None):
    """The state of `step`; also rewinds `data_iterator` when given."""
    args = {'state': ocp.args.StandardRestore(_abstract(state_template))}
    if data_iterator is not None:
      self._check_process_count(step)
      args['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    return restored['state']

  def _check_process_count(self, step: int) -> None:
    # Each process saved its own input position; a run resumes with as many
    # processes as it saved with.
    data = storage.join(self.directory, str(step), 'data')
    count = jax.process_count()
    if not (data / f'process_{jax.process_index()}-of-{count}.json').exists():
      saved = sorted(p.name for p in data.glob('process_*.json'))
      raise ValueError(
          f'{data}: the checkpoint was saved by other processes ({saved}) '
          f'than this run has ({count}); resume with the same number of '
          'processes, or start another workdir with --config.init_from')

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def resolve_init_from(path: str) -> tuple[str, int]:
  """(checkpoints folder, step) named by an ``init_from`` path."""
  path = storage.join(path)
  if path.name.isdigit() and (path / 'state').is_dir():
    return str(path.parent), int(path.name)
  for folder in (path / CHECKPOINT_DIR, path):
    if folder.is_dir():
      steps = [int(d.name) for d in folder.iterdir() if d.name.isdigit()]
      if steps:
        return str(folder), max(steps)
  raise FileNotFoundError(
      f'init_from={str(path)!r}: no checkpoint there (expected a workdir, '
      f'its {CHECKPOINT_DIR}/ folder or a {CHECKPOINT_DIR}/<step> folder)')


def load_weights(path: str, state_template):
  """Params and BatchNorm statistics of the checkpoint at ``init_from``."""
  folder, step = resolve_init_from(path)
  manager = _manager(folder, read_only=True)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(state_template))))['state']
  logging.info('Initialised weights from %s step %d', folder, step)
  return state_template.replace(params=restored.params,
                                batch_stats=restored.batch_stats)
