"""Dynamic batching: the model input rows of concurrent requests merged
into one run of an exported predictor.

Requests say they are coming (`expect`) while they decode and crop, then
hand their rows (`ExportedPredictor.prepare`) to `run_rows` and await the
outputs. One loop takes the first waiting chunk, then more until
``max_batch`` rows or ``max_delay_ms`` after the first, waiting only while
some request is still on its way (a lone request runs at once); pads the
rows to the
smallest of a few batch sizes, all compiled when the batcher starts, and
runs them on one worker thread, so the event loop keeps serving and nothing
compiles while serving. A request with more rows than ``max_batch`` (many
boxes) is cut into chunks that join different batches.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses

import numpy as np


def batch_sizes(max_batch: int) -> tuple[int, ...]:
  """Powers of two below `max_batch`, and `max_batch`."""
  sizes = {max_batch}
  size = 1
  while size < max_batch:
    sizes.add(size)
    size *= 2
  return tuple(sorted(sizes))


@dataclasses.dataclass
class _Chunk:
  batch: dict
  future: asyncio.Future

  def __len__(self) -> int:
    return len(self.batch['image'])


class DynamicBatcher:
  """Merges rows of concurrent requests (module docstring)."""

  def __init__(self, model, max_batch: int = 8, max_delay_ms: float = 5.0,
               on_batch=None):
    if max_batch < 1:
      raise ValueError(f'max_batch must be at least 1, got {max_batch}')
    self.model = model
    self.max_batch = max_batch
    self.max_delay = max_delay_ms / 1000
    self.sizes = batch_sizes(max_batch)
    self.on_batch = on_batch  # called with (real rows, padded size)
    self._queue: asyncio.Queue | None = None
    self._carried: collections.deque = collections.deque()
    self._task = None
    self._coming = 0  # requests between `expect` and `run_rows`
    self._worker = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix='predict')

  def compile(self) -> None:
    """Compiles every padded batch size (before serving)."""
    self.model.compile(self.sizes)

  async def start(self) -> None:
    self._queue = asyncio.Queue()
    self._task = asyncio.create_task(self._loop())

  async def stop(self) -> None:
    """Stops once the rows already waiting are run."""
    if self._task is not None:
      await self._queue.join()
      self._task.cancel()
      self._task = None
    self._coming = 0  # requests between `expect` and `run_rows`
    self._worker.shutdown(wait=True)

  @contextlib.contextmanager
  def expect(self):
    """Marks a request on its way to `run_rows` (called within)."""
    self._coming += 1
    try:
      yield
    finally:
      self._coming -= 1

  async def run_rows(self, batch: dict) -> dict:
    """The model's outputs for `batch`'s rows, run with other requests'."""
    self._coming -= 1  # queued now; `expect` adds it back on the way out
    try:
      return await self._queued(batch)
    finally:
      self._coming += 1

  async def _queued(self, batch: dict) -> dict:
    n = len(batch['image'])
    loop = asyncio.get_running_loop()
    chunks = []
    for start in range(0, n, self.max_batch):
      chunk = _Chunk({k: v[start:start + self.max_batch]
                      for k, v in batch.items()}, loop.create_future())
      chunks.append(chunk)
      self._queue.put_nowait(chunk)
    parts = await asyncio.gather(*(c.future for c in chunks))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  async def _next(self, timeout: float | None):
    if self._carried:
      return self._carried.popleft()
    if timeout is None:
      return await self._queue.get()
    return await asyncio.wait_for(self._queue.get(), timeout)

  async def _loop(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      chunks = [await self._next(None)]
      rows = len(chunks[0])
      deadline = loop.time() + self.max_delay
      while rows < self.max_batch and (self._coming or self._carried or
                                       not self._queue.empty()):
        try:
          chunk = await self._next(max(deadline - loop.time(), 0))
        except TimeoutError:
          break
        if rows + len(chunk) > self.max_batch:
          self._carried.append(chunk)
          break
        chunks.append(chunk)
        rows += len(chunk)
      await self._run(loop, chunks, rows)

  async def _run(self, loop, chunks, rows: int) -> None:
    size = next(s for s in self.sizes if s >= rows)
    batch = self.model.pad_batch(
        {k: np.concatenate([c.batch[k] for c in chunks])
         for k in chunks[0].batch}, size)
    try:
      outputs = await loop.run_in_executor(self._worker, self.model.run,
                                           batch)
    except Exception as e:  # pylint: disable=broad-except
      for c in chunks:
        if not c.future.done():
          c.future.set_exception(e)
    else:
      if self.on_batch is not None:
        self.on_batch(rows, size)
      start = 0
      for c in chunks:
        if not c.future.done():  # a request that gave up is skipped
          c.future.set_result({k: v[start:start + len(c)]
                               for k, v in outputs.items()})
        start += len(c)
    finally:
      for _ in chunks:
        self._queue.task_done()
