"""Setup shared by the command-line programs (main, evaluate, predict).

`define_run_flags` gives evaluate and predict ``--workdir``, ``--checkpoint``
and a ``--config`` flag whose default is the run's saved config, so
``--config.key=value`` overrides it; `load_run` loads what they name.

Orbax logs every step of every save at INFO through absl, which drowns the
training log; only its warnings and errors are kept.
"""

import logging as std_logging

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from hpe_jax.runtime import run_config
from hpe_jax.runtime import trained_run

# tensorboardX renames tags with '@' (pck@0.2 -> pck_0.2) at INFO each time.
_QUIET_PACKAGES = ('/orbax/', '/jax/_src/xla_bridge', '/tensorboardX/')


# Orbax warns about every checkpoint saved without an eval metric; only
# evaluation steps have one, by design.
_QUIET_MESSAGES = ('Requested `tracked_metric`',)


class _QuietLibraries(std_logging.Filter):

  def filter(self, record: std_logging.LogRecord) -> bool:
    if any(m in str(record.msg) for m in _QUIET_MESSAGES):
      return False
    return record.levelno >= std_logging.WARNING or not any(
        p in record.pathname for p in _QUIET_PACKAGES)


def setup_logging() -> None:
  logging.get_absl_handler().addFilter(_QuietLibraries())


def enable_compilation_cache(path: str) -> None:
  """Keeps compiled programs in `path` across runs ('' leaves it off; the
  JAX_COMPILATION_CACHE_DIR environment variable works too).

  By JAX's default only programs that took a second or more to compile are
  kept (JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS changes it); the
  paper-sized hourglass step takes tens of seconds.
  """
  if path:
    jax.config.update('jax_compilation_cache_dir', path)


def workdir_from_argv(argv) -> str | None:
  """--workdir's value, read before flags are parsed (to load the config)."""
  for i, arg in enumerate(argv):
    if arg.startswith('--workdir='):
      return arg.split('=', 1)[1]
    if arg == '--workdir' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def define_run_flags(argv) -> None:
  """--workdir, --checkpoint and --config (the run's saved config)."""
  flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
  flags.DEFINE_string('checkpoint', 'latest',
                      "'latest', 'best' or a step number.")
  workdir = workdir_from_argv(argv)
  if workdir:
    config_flags.DEFINE_config_dict('config', run_config.load_config(workdir),
                                    lock_config=True)
  flags.mark_flags_as_required(['workdir'])


def load_run():
  """(config, model, variables, step, mesh) named by the run flags."""
  setup_logging()
  config = flags.FLAGS.config
  model, variables, step, mesh = trained_run.load_trained(
      config, flags.FLAGS.workdir, flags.FLAGS.checkpoint)
  return config, model, variables, step, mesh
