"""Errors whose message is the whole story.

A `ReportableError` is raised for what a user can fix or must know (a
config key, a missing file, an empty dataset, a busy workdir, a run that
diverged, a checkpoint that cannot be written): its message names the file
or setting and what to do. The commands print it as one line and exit with
status 1, without a traceback (``--show_traceback`` shows one). Anything
else is a bug and keeps its traceback.
"""


class ReportableError(Exception):
  """A fault a user can act on; the message says what and where."""

  # The program ends at once after the message (`os._exit`), not waiting
  # for threads that may be stuck (e.g. input threads on a hung file system).
  exit_now = False


class ConfigError(ReportableError, ValueError):
  """The config (or a command-line flag) is invalid."""


class DataError(ReportableError):
  """The input data cannot be used (empty, or too many damaged samples)."""


class CheckpointError(ReportableError):
  """A checkpoint cannot be written or read."""


class TrainingDiverged(ReportableError, FloatingPointError):
  """The loss, gradients or parameters stopped being finite."""
