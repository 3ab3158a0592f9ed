"""The training state: everything an exact resume needs besides the data.

Step, parameters, BatchNorm statistics, optimizer state and the RNG key live
in one pytree that Orbax saves and restores as a whole; the input iterator's
position is checkpointed beside it (`hpe_jax.training.checkpointing`).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import optax


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
