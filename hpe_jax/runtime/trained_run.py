"""Loading a trained run: its model and the variables of one checkpoint.

What evaluate, predict and (later) export start from. The checkpoint is
restored into the shapes of the run's training state, derived without
computing anything (`train_state.abstract`).

Loading only reads (a training run may be writing the same workdir):

- 'latest' falls back to the newest checkpoint that restores, with one
  warning per damaged newer step (left where it is);
- 'best' or a step number that is missing or damaged, or a workdir without
  checkpoints, raises `errors.CheckpointError` with one line naming the
  checkpoint, the reason and the steps there.
"""

from __future__ import annotations

import ml_collections

from hpe_jax import errors
from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.models import registry
from hpe_jax.runtime import checkpointing
from hpe_jax.runtime import sharding
from hpe_jax.training import optimizers
from hpe_jax.training import train_state


def checkpoint_step(ckpt: checkpointing.Checkpointer, checkpoint: str) -> int:
  """The step `checkpoint` ('latest', 'best' or a number) names.

  Raises:
    errors.ConfigError: `checkpoint` is none of these.
    errors.CheckpointError: there is no such checkpoint.
  """
  if checkpoint == 'latest':
    step = ckpt.latest_step()
  elif checkpoint == 'best':
    step = ckpt.best_step()
  else:
    try:
      step = int(checkpoint)
    except ValueError:
      raise errors.ConfigError(
          f"--checkpoint={checkpoint!r}: expected 'latest', 'best' or a step "
          'number') from None
  if step is None:
    what = 'checkpoint' if checkpoint == 'latest' else (
        'checkpoint with an eval metric (best)')
    raise errors.CheckpointError(f'{ckpt.directory}: no {what} there')
  return step


def load_trained(config: ml_collections.ConfigDict, workdir: str,
                 checkpoint: str = 'latest'):
  """The model and variables of a run's checkpoint.

  Args:
    config: the run's config (`run_config.load_config`), possibly with
      overrides.
    workdir: the run's workdir.
    checkpoint: 'latest', 'best' (by the run's primary eval metric) or a
      step number.

  Returns:
    (model, variables, step, mesh).

  Raises:
    errors.CheckpointError: no checkpoint, or the one named ('best' or a
      step) is missing or damaged, or every one is damaged ('latest').
  """
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints,
                                    read_only=True)
  try:
    step = None if checkpoint == 'latest' else checkpoint_step(ckpt,
                                                               checkpoint)
    mesh = sharding.make_mesh()
    model = registry.build_for_run(config, datasets.skeleton(config.dataset))
    tx, _ = optimizers.make_optimizer(config.optimizer, config.total_steps)
    target = train_state.abstract(model, tx, tasks.make(config), config, mesh)
    if step is None:
      step, state = ckpt.restore_latest(target)  # moves nothing
      if step is None:
        raise errors.CheckpointError(
            f'{ckpt.directory}: no checkpoint there')
    else:
      state = ckpt.restore(step, target)
  finally:
    ckpt.close()
  return model, state.variables, step, mesh
