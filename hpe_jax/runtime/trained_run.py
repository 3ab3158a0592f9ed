"""Loading a trained run: its model and the variables of one checkpoint.

What evaluate, predict and (later) export start from. The checkpoint is
restored into the shapes of the run's training state, derived without
computing anything (`train_state.abstract`).
"""

from __future__ import annotations

import ml_collections

from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.models import registry
from hpe_jax.runtime import checkpointing
from hpe_jax.runtime import sharding
from hpe_jax.training import optimizers
from hpe_jax.training import train_state


def checkpoint_step(ckpt: checkpointing.Checkpointer, checkpoint: str) -> int:
  """The step `checkpoint` ('latest', 'best' or a number) names."""
  if checkpoint == 'latest':
    step = ckpt.latest_step()
  elif checkpoint == 'best':
    step = ckpt.best_step()
  else:
    step = int(checkpoint)
  if step is None:
    raise FileNotFoundError(f'{ckpt.directory}: no {checkpoint} checkpoint')
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
  """
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  step = checkpoint_step(ckpt, checkpoint)
  mesh = sharding.make_mesh()
  model = registry.build_for_run(config, datasets.skeleton(config.dataset))
  tx, _ = optimizers.make_optimizer(config.optimizer, config.total_steps)
  target = train_state.abstract(model, tx, tasks.make(config), config, mesh)
  state = ckpt.restore(step, target)
  ckpt.close()
  return model, state.variables, step, mesh
