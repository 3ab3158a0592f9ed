"""Joining a run that spans several processes (hosts) with JAX's own runtime.

Every process of a multi-host run executes the same command. Before JAX
touches a device, `initialize` starts ``jax.distributed`` so the processes
find each other through a coordinator (process 0) and ``jax.devices()`` lists
the devices of all of them; from then on the device mesh, the sharded train
step, Orbax checkpoints and the preemption sync point are collective.

How a process learns its place:

- explicitly, ``--coordinator_address=HOST:PORT --num_processes=N
  --process_id=I`` (any machines; what ``launch/local.py`` passes);
- automatically where a scheduler started it: a Cloud TPU VM (every worker
  of a pod slice), a SLURM step with several tasks, Open MPI's ``mpirun``.
  JAX reads the coordinator, count and index from that environment;
- otherwise the run is a single process and nothing is started.
"""

from __future__ import annotations

import glob
import os

from absl import logging
import jax

# PCI vendor id of Google's TPU chips (what JAX's own TPU detection reads).
_GOOGLE_PCI_VENDOR = '0x1ae0'


def _on_tpu_vm() -> bool:
  for vendor in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(vendor) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def _count(name: str) -> int:
  try:
    return int(os.environ.get(name, '1'))
  except ValueError:
    return 1


def cluster_environment() -> str | None:
  """The scheduler that started this process as one of several, if any."""
  # A SLURM batch script itself runs once; only `srun` steps are the tasks.
  if _count('SLURM_NTASKS') > 1 and 'SLURM_STEP_NODELIST' in os.environ:
    return 'slurm'
  if _count('OMPI_COMM_WORLD_SIZE') > 1:
    return 'openmpi'
  if _on_tpu_vm():
    return 'tpu'
  return None


def initialize(coordinator_address: str = '', num_processes: int = 0,
               process_id: int = -1) -> None:
  """Starts ``jax.distributed`` if this run spans several processes.

  Args:
    coordinator_address: HOST:PORT of process 0; with the other two, the
      explicit way. Empty to detect the environment.
    num_processes: how many processes the run has (0: not given).
    process_id: this process's index in [0, num_processes) (-1: not given).

  Raises:
    ValueError: only some of the three were given, or they disagree.
  """
  given = {'--coordinator_address': bool(coordinator_address),
           '--num_processes': num_processes > 0,
           '--process_id': process_id >= 0}
  if any(given.values()):
    if not all(given.values()):
      missing = ', '.join(k for k, v in given.items() if not v)
      raise ValueError(
          '--coordinator_address, --num_processes and --process_id go '
          f'together; missing {missing}')
    if process_id >= num_processes:
      raise ValueError(f'--process_id={process_id} is not below '
                       f'--num_processes={num_processes}')
    if ':' not in coordinator_address:
      raise ValueError(f'--coordinator_address={coordinator_address!r}: '
                       'expected HOST:PORT')
    logging.info('Process %d of %d, coordinator %s', process_id,
                 num_processes, coordinator_address)
    # No scheduler detection: under SLURM it would also pin each process to
    # one GPU, which the caller did not ask for.
    jax.distributed.initialize(coordinator_address, num_processes, process_id,
                               cluster_detection_method='deactivate')
    return
  environment = cluster_environment()
  if environment is not None:
    logging.info('Started by %s: joining the other processes.', environment)
    jax.distributed.initialize()
