"""SIGTERM (preemption) handling: finish the step, save, exit cleanly.

Cluster schedulers and TPU maintenance events send SIGTERM and wait a grace
period. The training loop asks `PreemptionWatcher.reached(step)` after each
step; when it says so, every process saves a checkpoint of that step and
returns, so re-running the same command resumes without losing work.

- One process: a Python signal handler sets a flag; the step the loop is at
  is the one saved. The handler stays installed until that save is final,
  so a second SIGTERM cannot cut it short. While the loop waits for input
  (`waiting_for_input`), a second SIGTERM stops the run at once without
  saving (`InputInterrupted`): an input pipeline that is stuck must not keep
  a preempted run alive; its last checkpoint stays as it was.
- Several processes (``jax.distributed`` started): the signal may reach one
  host only, and all must save the same step together. JAX's preemption
  service catches SIGTERM on any host, tells the others through the
  coordinator, and `reached` turns true on every host at the same, agreed
  step (the latest step any host had reached, plus one). No Python handler
  is installed then, since it would take the signal from JAX's.
"""

import contextlib
import signal
import threading

from absl import logging
import jax
from jax.experimental import multihost_utils

from hpe_jax import errors


class InputInterrupted(errors.ReportableError):
  """A second SIGTERM while the run waited for its input."""

  exit_now = True  # the input threads may never return


class PreemptionWatcher:
  """Whether the run should save and stop now (a context manager)."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None
    self._multihost = False
    self._waiting = False

  def _handle(self, signum, frame):
    del frame
    if self._waiting and self._event.is_set():
      raise InputInterrupted(
          f'signal {signum} received again while waiting for input: stopped '
          'without saving; re-running the same command resumes from the '
          'last checkpoint')
    logging.warning('Received signal %d: saving a checkpoint and stopping.',
                    signum)
    self._event.set()

  @contextlib.contextmanager
  def waiting_for_input(self):
    """Marks the wait for the next batch (see the module docstring)."""
    self._waiting = True
    try:
      yield
    finally:
      self._waiting = False

  def reached(self, step: int) -> bool:
    """True at the step every process saves and stops; call every step."""
    if self._multihost:
      stop = multihost_utils.reached_preemption_sync_point(step)
      if stop:
        logging.warning('Preemption on some host: all save step %d.', step)
      return stop
    return self._event.is_set()

  def __enter__(self):
    self._multihost = jax.distributed.is_initialized()
    # Signal handlers can only be installed from the main thread; elsewhere
    # (e.g. a test runner's worker thread) preemption is simply not watched.
    if (not self._multihost
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
