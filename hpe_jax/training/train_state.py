"""The training state: everything an exact resume needs besides the data.

Step, parameters, BatchNorm statistics, optimizer state and the RNG key live
in one pytree that Orbax saves and restores as a whole; the input iterator's
position is checkpointed beside it (`hpe_jax.runtime.checkpointing`).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from hpe_jax.runtime import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  rng: jax.Array

  @property
  def variables(self) -> dict:
    """The model's variables, as `module.apply` takes them."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


def _init_fn(model, tx, task, image_size, seed: int):
  inputs = task.init_inputs(tuple(image_size), model.num_joints, model.dtype)

  def init():
    rng = jax.random.key_data(jax.random.key(seed))
    params_rng, state_rng = jax.random.split(rng)
    variables = model.init(params_rng, **inputs, train=False)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=variables['params'],
        batch_stats=variables.get('batch_stats', {}),
        opt_state=tx.init(variables['params']), rng=state_rng)

  return init


def create(model, tx, task, config, mesh) -> TrainState:
  """A fresh training state, replicated over the mesh."""
  init = _init_fn(model, tx, task, config.input.image_size, config.seed)
  return jax.jit(init, out_shardings=sharding.replicated(mesh))()


def abstract(model, tx, task, config, mesh) -> TrainState:
  """Shapes, dtypes and shardings of `create`'s state, computing nothing:
  the target a checkpoint is restored into."""
  init = _init_fn(model, tx, task, config.input.image_size, config.seed)
  replicated = sharding.replicated(mesh)
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(init))
