"""Trains and evaluates a model: the command researchers run every day.

  python -m hpe_jax.main --config=configs/hourglass.py[:smoke] --workdir=DIR \
      [--config.key=value ...]

Re-running the same command with the same workdir resumes from the latest
checkpoint. See `hpe_jax.training.trainer` for what the workdir holds.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from hpe_jax import cli
from hpe_jax.training import trainer

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Recipe file, e.g. configs/hourglass.py:smoke.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Where the run writes everything it produces.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.setup_logging()
  metrics = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  logging.info('Final evaluation: %s', metrics)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
