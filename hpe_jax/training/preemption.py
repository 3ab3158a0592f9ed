"""SIGTERM (preemption) handling: finish the step, save, exit cleanly.

Cluster schedulers and TPU maintenance events send SIGTERM and wait a grace
period. The handler only sets a flag; the training loop checks it after each
step, saves a checkpoint at the step it reached and returns, so re-running
the same command resumes without losing work.
"""

import signal
import threading

from absl import logging


class PreemptionWatcher:
  """Records whether SIGTERM arrived while installed (a context manager)."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def _handle(self, signum, frame):
    del frame
    logging.warning('Received signal %d: saving a checkpoint and stopping.',
                    signum)
    self._event.set()

  def requested(self) -> bool:
    return self._event.is_set()

  def __enter__(self):
    # Signal handlers can only be installed from the main thread; elsewhere
    # (e.g. a test runner's worker thread) preemption is simply not watched.
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False
