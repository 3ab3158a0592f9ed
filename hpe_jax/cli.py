"""Setup shared by the command-line programs (main, evaluate, predict, ...).

`run` is every program's ``app.run``: a mistake on the command line (an
unknown config key, a recipe file that does not exist, a bad value) or any
`errors.ReportableError` (a missing file, an empty dataset, a busy workdir)
ends the program with one line naming what is wrong and exit status 1; no
traceback unless ``--show_traceback``. `config_value` reads a config flag
the same way, before anything is written, and `output_folder` makes a
command's output folder before its slow work starts.

`define_run_flags` gives evaluate and predict ``--workdir``, ``--checkpoint``
and a ``--config`` flag whose default is the run's saved config, so
``--config.key=value`` overrides it; `load_run` loads what they name.

Orbax logs every step of every save at INFO through absl, which drowns the
training log; only its warnings and errors are kept.
"""

import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
from ml_collections import config_flags

from hpe_jax import errors
from hpe_jax.runtime import run_config
from hpe_jax.runtime import storage
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


_SHOW_TRACEBACK = flags.DEFINE_bool(
    'show_traceback', False,
    'Show the traceback of errors that are otherwise reported in one line.')


def _program() -> str:
  name = os.path.basename(sys.argv[0])
  if name == '__main__.py' or name.endswith('.py'):
    # `python -m hpe_jax.x` sets argv[0] to the module's file.
    module = sys.modules['__main__'].__spec__
    return module.name if module is not None else name
  return name


def _root_cause(e: BaseException) -> BaseException:
  while (e.__cause__ or e.__context__) is not None:
    e = e.__cause__ or e.__context__
  return e


def _flag_error(e: Exception, argv) -> str:
  """One line saying which flag is wrong and why."""
  root = _root_cause(e)
  if isinstance(root, (AttributeError, KeyError)):
    # ml_collections names the missing key only, quoted twice.
    key = str(root).strip('"\'')
    given = [a.split('=', 1)[0] for a in argv[1:]
             if a.startswith('--config.') and
             a.split('=', 1)[0].rsplit('.', 1)[-1] == key]
    where = given[0] if given else f'--config...{key}'
    return (f'{where}: the config has no key {key!r} (keys are locked: '
            'see the recipe file for the ones it has)')
  if isinstance(root, OSError) and root.filename:
    return f'{root.filename}: {root.strerror or root}'
  message = str(root).strip().splitlines()[-1].strip()
  # absl names the flag and its value before the parser's own message.
  flag = str(e).split(': ', 1)[0]
  return f'{flag}: {message}' if flag.startswith('flag --') else message


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if isinstance(e, flags.IllegalFlagValueError):
      sys.exit(f'{_program()}: {_flag_error(e, argv)}')
    sys.exit(f'{_program()}: {e}\nPass --helpshort for the flags.')
  except Exception as e:  # pylint: disable=broad-except
    # Overrides of a locked config raise while flags are parsed.
    sys.exit(f'{_program()}: {_flag_error(e, argv)}')


def run(main) -> None:
  """`app.run(main)`, reporting user mistakes in one line (module
  docstring)."""

  def reporting(argv):
    try:
      return main(argv)
    except errors.ReportableError as e:
      if _SHOW_TRACEBACK.value:
        raise
      if e.exit_now:
        print(f'{_program()}: {e}', file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # pylint: disable=protected-access
      sys.exit(f'{_program()}: {e}')

  app.run(reporting, flags_parser=_parse_flags)


def config_value(config_flag):
  """The config a config-file flag names, or a one-line `errors.ConfigError`
  (a recipe file that does not exist, or one that fails to load)."""
  try:
    config = config_flag.value
    # A config file that failed to load is a stand-in raising on any use.
    config.keys()
    return config
  except Exception as e:  # pylint: disable=broad-except
    raise errors.ConfigError(f'--{config_flag.name}: '
                             f'{_flag_error(e, sys.argv)}') from e


def output_folder(path: str, *names: str) -> epath.Path:
  """The folder `path`/`names` (local or bucket), created with its parents.

  Commands call it before their slow work, so that a folder that cannot be
  made (a file in the way, no permission) is a one-line
  `errors.ReportableError` at once, not an error after the work.
  """
  folder = storage.join(path, *names)
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    # Raised for the folder itself or for a parent that is a file.
    in_the_way = isinstance(e, (FileExistsError, NotADirectoryError))
    reason = 'a file is in the way' if in_the_way else e.strerror or e
    raise errors.ReportableError(
        f'{folder}: cannot create the output folder ({reason})') from e
  return folder


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
    try:
      config = run_config.load_config(workdir)
    except (OSError, ValueError) as e:
      sys.exit(f'{_program()}: --workdir={workdir}: not a training run '
               f'({_flag_error(e, argv)})')
    config_flags.DEFINE_config_dict('config', config, lock_config=True)
  flags.mark_flags_as_required(['workdir'])


def load_run():
  """(config, model, variables, step, mesh) named by the run flags."""
  setup_logging()
  config = flags.FLAGS.config
  model, variables, step, mesh = trained_run.load_trained(
      config, flags.FLAGS.workdir, flags.FLAGS.checkpoint)
  return config, model, variables, step, mesh
