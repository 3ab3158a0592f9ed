"""Orbax checkpoints of a run: state, input position and eval metric.

A run's checkpoints live in ``WORKDIR/checkpoints/<step>/`` with two items:
``state`` (the `TrainState`: step, params, BatchNorm statistics, optimizer
state, RNG) and ``data`` (the Grain iterator's position, one
``process_<i>-of-<n>.json`` per process), so a resumed run continues exactly
where the interrupted one was. The last ``keep`` checkpoints are kept, plus
the best one by the run's primary eval metric.

Where a run starts from (`start_point`), in order of precedence:

1. resume: the workdir already has checkpoints; continue from the latest
   intact one (`Checkpointer.restore_latest`);
2. ``config.init_from``: weights (params and BatchNorm statistics only) of
   another run's checkpoint: a workdir, its ``checkpoints/`` folder or one
   ``checkpoints/<step>`` folder; optimizer, step and data start fresh;
3. scratch.

Faults, and what happens (`errors.CheckpointError` is printed by the
commands as one line, without a traceback):

- A damaged checkpoint (a file missing, truncated or unreadable, anything
  Orbax, TensorStore or Grain raise while restoring it, or no input-position
  file of this process): `restore_latest` logs one warning naming its folder
  and the reason and tries the next older step. A damaged checkpoint is
  never deleted. When training resumes (``move_damaged=True``), the damaged
  steps newer than the one resumed from are moved to
  ``WORKDIR/checkpoints_damaged/<step>`` so that Orbax neither trips over
  them when the run saves that step again nor counts them as the newest
  (Orbax accepts saving a step lower than an existing one, but then its
  keep-the-last-N policy deletes the *higher* steps as the older ones).
  Read-only callers (evaluate, predict) move nothing. If no step restores,
  `errors.CheckpointError` lists them all and nothing is moved.
- Input positions saved by another number of processes: a clear
  `errors.CheckpointError` (resume with the same count), not a fallback.
- A failed save: Orbax writes asynchronously, so a write error (disk full,
  permission, bucket) surfaces in `save` (of the same or the next step),
  `wait` or `close`; each raises `errors.CheckpointError` naming the step
  that failed and the last intact one. The earlier checkpoints are kept; the
  half-written ``<step>.orbax-checkpoint-tmp`` folder is ignored by Orbax
  and replaced when that step is saved again, so re-running the command
  resumes from the last intact checkpoint.
"""

from __future__ import annotations

import json

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy

from hpe_jax import errors
from hpe_jax.runtime import storage

CHECKPOINT_DIR = 'checkpoints'
DAMAGED_DIR = 'checkpoints_damaged'
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


def _reason(error: BaseException) -> str:
  """`error` in one short line: its type and the first line of its text."""
  lines = str(error).strip().splitlines()
  text = lines[0] if lines else ''
  if len(text) > 200:
    text = text[:197] + '...'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__


def _all_processes_agree(ok: bool) -> bool:
  """True when `ok` holds on every process of the run."""
  if jax.process_count() == 1:
    return ok
  flags = multihost_utils.process_allgather(np.asarray(ok, np.int32))
  return bool(np.all(flags))


class Checkpointer:
  """Saves and restores the checkpoints of one workdir.

  Every method is called by all processes of a multi-host run. The workdir
  is assumed to be on storage all processes share (a bucket or a network
  file system): they all see the same checkpoint folders, so a damaged
  ``state`` item fails to restore on all of them alike; what only one
  process reads (its input-position file) is checked up front and the
  processes agree on it before anything is restored.
  """

  def __init__(self, workdir: str, keep: int = 3, best_mode: str = 'max',
               read_only: bool = False):
    self.workdir = str(storage.join(workdir))
    self.directory = str(storage.join(workdir, CHECKPOINT_DIR))
    self.best_mode = best_mode
    self.read_only = read_only
    self.manager = _manager(self.directory, keep, best_mode, read_only)
    self._in_flight = None  # the step whose asynchronous save may still fail
    self._closed = False

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

  # Saving.

  def save(self, step: int, state, data_iterator, metric: float | None = None):
    """Saves asynchronously; `metric` ranks the checkpoint for "best".

    Raises:
      errors.CheckpointError: this save, or the previous one still being
        written, failed.
    """
    self._finish_in_flight()
    try:
      self.manager.save(
          step, args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              data=grain.checkpoint.CheckpointSave(data_iterator)),
          metrics=None if metric is None else {'value': float(metric)},
          force=True)
    except Exception as e:  # pylint: disable=broad-exception-caught
      self._save_failed(step, e)
    self._in_flight = step

  def wait(self):
    """Waits for the save in flight.

    Raises:
      errors.CheckpointError: it failed.
    """
    self._finish_in_flight()

  def close(self):
    """Waits for the save in flight and releases Orbax's resources.

    Raises:
      errors.CheckpointError: that save failed.
    """
    if self._closed:
      return
    self._finish_in_flight()
    self._closed = True
    self.manager.close()

  def _finish_in_flight(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-exception-caught
      self._save_failed(self._in_flight, e)
    self._in_flight = None

  def _save_failed(self, step: int | None, error: Exception):
    # Orbax has already dropped the failed step from its list of steps; the
    # ones it lists are committed (`<step>.orbax-checkpoint-tmp` folders are
    # not steps to it, and a save of that step replaces them).
    intact = [s for s in self.manager.all_steps() if s != step]
    last = f'step {max(intact)}' if intact else 'none'
    self._in_flight = None
    self._closed = True
    try:
      self.manager.close()
    except Exception:  # pylint: disable=broad-exception-caught
      logging.exception('Closing the checkpoint manager after a failed save')
    which = f'checkpoint {step}' if step is not None else 'a checkpoint'
    raise errors.CheckpointError(
        f'saving {which} in {self.directory} failed ({_reason(error)}); the '
        f'last intact checkpoint is {last}. Fix the cause and re-run the same '
        'command to resume.') from error

  # Restoring.

  def restore(self, step: int, state_template, data_iterator=None):
    """The state of `step`; also rewinds `data_iterator` when given.

    Raises:
      errors.CheckpointError: `step` is missing or damaged, or its input
        positions were saved by another number of processes.
    """
    state, problem = self._try_restore(step, state_template, data_iterator)
    if problem is not None:
      kept = ', '.join(map(str, self.manager.all_steps())) or 'none'
      raise errors.CheckpointError(
          f'checkpoint {step} in {self.directory} cannot be restored '
          f'({problem}); the checkpoints there: {kept}.')
    return state

  def restore_latest(self, state_template, data_iterator=None,
                     move_damaged: bool = False):
    """The newest checkpoint that restores: (step, state), or (None, None).

    Steps are tried newest first. A step that fails to restore is damaged:
    one warning names its folder and the reason, and the next older step is
    tried. `data_iterator`, when given, is rewound only to the step that
    restored. With `move_damaged` (a run that resumes and will save again),
    the damaged steps are moved to ``WORKDIR/checkpoints_damaged/<step>``
    (by process 0) once an intact one is found; nothing is ever deleted.

    Raises:
      errors.CheckpointError: every checkpoint is damaged (nothing moved), or
        the input positions were saved by another number of processes, or a
        damaged step cannot be moved aside.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    damaged = []
    for step in steps:
      state, problem = self._try_restore(step, state_template, data_iterator)
      if problem is None:
        break
      damaged.append((step, problem))
    else:
      if not steps:
        return None, None
      listed = '; '.join(f'{s}: {p}' for s, p in damaged)
      raise errors.CheckpointError(
          f'no checkpoint in {self.directory} can be restored ({listed}). '
          'They are kept as they are: restore them, or move them away to '
          'start the run afresh (if the config changed since they were '
          'saved, use another workdir with --config.init_from).')
    move = bool(damaged) and move_damaged and not self.read_only
    failure = None
    for bad, problem in damaged:
      folder = storage.join(self.directory, str(bad))
      where = 'left it in place'
      if move and failure is None:
        try:
          where = self._move_aside(bad)
        except errors.CheckpointError as e:
          failure = e
      logging.warning('Checkpoint %s is damaged (%s); %s, using step %d '
                      'instead.', folder, problem, where, step)
    if move:
      # Also the barrier after which process 0 has moved them.
      if not _all_processes_agree(failure is None):
        raise failure or errors.CheckpointError(
            f'process 0 could not move the damaged checkpoints out of '
            f'{self.directory}; see its log.')
      self.manager.reload()
    return step, state

  def _try_restore(self, step, state_template, data_iterator):
    """(state, None), or (None, why `step` cannot be restored).

    The iterator is rewound only once the state has restored, and Grain sets
    its position only after reading the whole file, so a failed attempt
    leaves it as it was.
    """
    problem = None
    if not storage.join(self.directory, str(step)).is_dir():
      problem = 'no such checkpoint'
    elif data_iterator is not None:
      problem = self._data_problem(step)
    if not _all_processes_agree(problem is None):
      return None, problem or (
          'the input position of another process is missing or unreadable')
    try:
      state = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_abstract(state_template))))['state']
    except Exception as e:  # pylint: disable=broad-exception-caught
      problem = _reason(e)
    if not _all_processes_agree(problem is None):
      return None, problem or 'it failed to restore on another process'
    if data_iterator is not None:
      try:
        self.manager.restore(step, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(data_iterator)))
      except Exception as e:  # pylint: disable=broad-exception-caught
        problem = f'input position: {_reason(e)}'
      if not _all_processes_agree(problem is None):
        return None, problem or 'it failed to restore on another process'
    return state, None

  def _data_problem(self, step: int) -> str | None:
    """What is wrong with this process's input position of `step`, if any.

    Raises:
      errors.CheckpointError: the positions were saved by another number of
        processes (not damage: resume with as many processes).
    """
    data = storage.join(self.directory, str(step), 'data')
    count = jax.process_count()
    mine = data / f'process_{jax.process_index()}-of-{count}.json'
    if not mine.exists():
      saved = sorted(p.name for p in data.glob('process_*.json')) if (
          data.is_dir()) else []
      if any(not name.endswith(f'-of-{count}.json') for name in saved):
        raise errors.CheckpointError(
            f'{data}: the checkpoint was saved by other processes ({saved}) '
            f'than this run has ({count}); resume with the same number of '
            'processes, or start another workdir with --config.init_from')
      return f'its input position {mine.name} is missing'
    try:
      json.loads(mine.read_text())
    except (OSError, ValueError) as e:
      return f'its input position {mine.name} is unreadable ({_reason(e)})'
    return None

  def _move_aside(self, step: int) -> str:
    """Moves the folder of damaged `step` out of Orbax's way; says where."""
    source = storage.join(self.directory, str(step))
    damaged = storage.join(self.workdir, DAMAGED_DIR)
    # Only process 0 moves (the folder is shared); the others wait for it in
    # `restore_latest` before they reload the list of steps.
    if jax.process_index() != 0:
      return f'process 0 moved it to {damaged}/'
    target = damaged / str(step)
    n = 1
    while target.exists():  # the same step was damaged before
      target = damaged / f'{step}.{n}'
      n += 1
    try:
      damaged.mkdir(parents=True, exist_ok=True)
      source.rename(target)
    except OSError as e:
      raise errors.CheckpointError(
          f'checkpoint {source} is damaged and could not be moved to '
          f'{target} ({_reason(e)}); move it out of {self.directory} '
          'yourself and re-run the same command.') from e
    return f'moved it to {target}'


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
