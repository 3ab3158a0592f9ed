"""Trains and evaluates a model: the command researchers run every day.

  python -m hpe_jax.main --config=configs/hourglass.py[:smoke] --workdir=DIR \
      [--config.key=value ...] [--compilation_cache=DIR] \
      [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

Re-running the same command with the same workdir resumes from the latest
checkpoint. See `hpe_jax.training.trainer` for what the workdir holds.

A multi-host run starts this same command once per process (host); see
`hpe_jax.runtime.multihost` for how the processes find each other.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from hpe_jax import cli
from hpe_jax.runtime import multihost
from hpe_jax.training import trainer

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Recipe file, e.g. configs/hourglass.py:smoke.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Where the run writes everything it produces '
                               '(a local folder or a gs:// bucket path).')
_CACHE = flags.DEFINE_string(
    'compilation_cache', '',
    'Folder of JAX\'s persistent compilation cache (opt-in): a re-run or '
    'a resumed run loads its compiled steps instead of compiling again.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', '',
    'HOST:PORT of process 0 of a multi-process run (with --num_processes '
    'and --process_id); not needed on TPU pods, SLURM or mpirun.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', 0, 'Processes of a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', -1, 'Index of this process in [0, --num_processes).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # The config is checked before anything is written.
  config = cli.config_value(_CONFIG)
  cli.setup_logging()
  cli.enable_compilation_cache(_CACHE.value)
  multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                       _PROCESS_ID.value)
  metrics = trainer.train_and_evaluate(config, _WORKDIR.value)
  logging.info('Final evaluation: %s', metrics)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  cli.run(main)
