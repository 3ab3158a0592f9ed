"""One run per workdir: an exclusive lock file.

Two runs writing one workdir would mix their checkpoints (Orbax of one
deletes the other's unfinished saves; a surviving step can hold the
parameters of one run and the optimizer moments of the other) and
interleave their ``metrics.jsonl``. A run therefore holds ``WORKDIR/lock``,
a JSON file with the holder's host, pid and start time, created atomically
(``O_EXCL``). A second run on a locked workdir stops at once with a message
naming the holder. A lock left by a process of this host that no longer
exists (a ``kill -9``) is stale: it is taken over with a warning. In a
multi-host run process 0 holds it for all.

Bucket workdirs have no atomic create; they are not locked (a warning says
so).
"""

from __future__ import annotations

import datetime
import json
import os
import socket

from absl import logging
import jax

from hpe_jax import errors
from hpe_jax.runtime import storage

LOCK_FILE = 'lock'


class WorkdirLocked(errors.ReportableError, RuntimeError):
  """Another live run holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Someone else's process: alive.
    return True
  return True


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid')} on {holder.get('host')}, started "
          f"{holder.get('started')}")


class WorkdirLock:
  """Holds `workdir`'s lock between `acquire` and `release` (or as a
  context manager)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(storage.absolute(workdir), LOCK_FILE)
    self.held = False

  def _create(self) -> bool:
    """Creates the lock file; False if it exists already."""
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      json.dump({'host': socket.gethostname(), 'pid': os.getpid(),
                 'started': datetime.datetime.now().isoformat(
                     timespec='seconds')}, f)
    return True

  def _holder(self) -> dict:
    try:
      with open(self.path) as f:
        return json.load(f)
    except (OSError, ValueError):
      # Being written this instant, or half-written by a killed process.
      return {}

  def acquire(self) -> None:
    if jax.process_index() != 0:
      return
    if storage.is_remote(self.workdir):
      logging.warning('%s is a bucket path: it is not locked, so make sure '
                      'no other run uses it.', self.workdir)
      return
    while not self._create():
      holder = self._holder()
      stale = (holder.get('host') == socket.gethostname() and
               isinstance(holder.get('pid'), int) and
               not _alive(holder['pid']))
      if not stale:
        raise WorkdirLocked(
            f'{self.workdir} is in use by another run ({_describe(holder)}; '
            f'lock file {self.path}). Wait for it to finish, stop it, or '
            'use another --workdir.')
      logging.warning('Taking over the stale lock of %s (%s): that process '
                      'no longer exists.', self.workdir, _describe(holder))
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass  # Another run took it over first; try again.
    self.held = True

  def release(self) -> None:
    if self.held and self._holder().get('pid') == os.getpid():
      os.remove(self.path)
    self.held = False

  def __enter__(self) -> WorkdirLock:
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
