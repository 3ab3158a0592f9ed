"""Data parallelism over a device mesh: one code path for 1 CPU to a TPU pod.

The mesh has one axis, ``data``, over every device of every process. Batches
are split along it; parameters and optimizer state are replicated. Under
``jax.jit`` with these shardings XLA inserts the gradient all-reduce, and
BatchNorm statistics are computed over the *global* batch (the same as one
big device would), a deliberate choice: results do not depend on the number
of devices.
"""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def make_mesh() -> Mesh:
  """One data axis over every device; `jax.make_mesh` orders the devices
  by the accelerator's topology (on TPUs, rings of the interconnect).

  The axis is ``Auto``: shardings are given to `jax.jit` and XLA propagates
  them (newer jax defaults to ``Explicit`` sharding-in-types).
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def per_process_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """The batch one process loads; checks it splits evenly over devices."""
  devices, processes = mesh.devices.size, jax.process_count()
  if global_batch_size % devices:
    raise ValueError(f'batch size {global_batch_size} does not split over '
                     f'{devices} devices')
  return global_batch_size // processes


def to_global(local_batch, mesh: Mesh):
  """Assembles each process's numpy batch into globally sharded arrays."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x),
      local_batch)


def to_host(global_array) -> np.ndarray:
  """The full value of a (possibly multi-process) array on every host."""
  if jax.process_count() == 1:
    return np.asarray(global_array)
  return np.asarray(multihost_utils.process_allgather(global_array,
                                                      tiled=True))
