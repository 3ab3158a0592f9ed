"""Everything a run logs, written to its workdir by process 0 only.

- ``metrics.jsonl``: one JSON object per logged step, ``{"step": N,
  "train/loss": ..., "eval/pck@0.2_torso": ...}``. Scalars written for the
  same step by separate calls (train metrics, then eval metrics) end up in one
  object. Non-finite values are written as the strings ``"nan"``, ``"inf"``
  and ``"-inf"`` (bare ``NaN`` is not JSON, and ``null`` would read as
  "missing"); `read_metrics` turns them back into floats.
- ``tensorboard/``: TensorBoard event files from tensorboardX (no
  TensorFlow): the same scalars, images, text and hyperparameters.

A run resumed from the checkpoint of step S passes ``resume_step=S``: lines
for later steps, written before the interruption, are dropped from
``metrics.jsonl``, and TensorBoard is told to hide its events from step S+1
on, so both describe the resumed run once.

On processes other than 0 the writer does nothing, so every process can make
the same calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import json
import math
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any

from absl import logging
import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorboardX
from tensorboardX import summary as tb_summary
from tensorboardX import utils as tb_utils
from tensorboardX.proto import summary_pb2

from hpe_jax.runtime import storage

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'

_NON_FINITE = {'nan': math.nan, 'inf': math.inf, '-inf': -math.inf}


def _scalar(tag: str, value) -> bool | int | float:
  """A Python number from a Python, numpy or jax scalar."""
  array = np.asarray(value)
  # jnp.issubdtype also knows bfloat16, which numpy sees as a void type.
  real = jnp.issubdtype(array.dtype, jnp.number) and not jnp.issubdtype(
      array.dtype, jnp.complexfloating)
  if array.size != 1 or not (real or array.dtype == bool):
    raise ValueError(f'{tag}: expected a real scalar, got {array.dtype} of '
                     f'shape {array.shape}')
  item = array.reshape(())[()]
  if jnp.issubdtype(array.dtype, jnp.floating):
    # The shortest decimal that round-trips in the value's own precision, so
    # a float32 0.1 reads 0.1 rather than 0.10000000149011612.
    return float(str(item))
  return item.item()


def _to_json(value):
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # 'nan', 'inf' or '-inf'
  return value


def _from_json(value):
  return _NON_FINITE.get(value, value) if isinstance(value, str) else value


def read_metrics(workdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """The objects of a workdir's ``metrics.jsonl``, non-finite values restored.

  Args:
    workdir: the run's workdir.

  Returns:
    One dict per logged step, in file order.

  Raises:
    FileNotFoundError: the workdir has no metrics file.
  """
  text = storage.join(workdir, METRICS_FILE).read_text(encoding='utf-8')
  return [{key: _from_json(value) for key, value in json.loads(line).items()}
          for line in text.splitlines() if line.strip()]


def _drop_after(path: pathlib.Path, step: int) -> bytes | None:
  """Rewrites ``metrics.jsonl`` without the lines for steps after `step`.

  Args:
    path: the metrics file (absent is fine).
    step: the last step to keep.

  Returns:
    The last line kept, newline included; None if none is.
  """
  if not path.exists():
    return None
  kept, dropped = [], 0
  for line in path.read_bytes().splitlines():
    if not line.strip():
      continue
    try:
      line_step = json.loads(line)['step']
    except (ValueError, KeyError, TypeError):
      # A line cut short by the interruption.
      line_step = None
    if line_step is not None and line_step <= step:
      kept.append(line + b'\n')
    else:
      dropped += 1
  if dropped:
    # Written aside and renamed, so a second interruption cannot lose the
    # lines that are kept.
    partial = path.with_name(path.name + '.tmp')
    partial.write_bytes(b''.join(kept))
    os.replace(partial, path)
  logging.info('%s: resuming after step %d, dropped %d later line(s)', path,
               step, dropped)
  return kept[-1] if kept else None


def _flatten(tree: Mapping[str, Any] | ml_collections.ConfigDict,
             prefix: str = '') -> dict[str, Any]:
  """Nested mappings as one level with '.'-joined keys."""
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, (Mapping, ml_collections.ConfigDict)):
      flat.update(_flatten(value, f'{name}.'))
    else:
      flat[name] = value
  return flat


class MetricWriter:
  """Writes a run's scalars, images and text to its workdir.

  Scalars of a step are kept in memory until a call for another step,
  `flush()` or `close()` writes their line; calls for the same step after a
  flush rewrite that line, so each step still gets one object. Lines are
  flushed to the file as they are written, so after a crash at most the step
  being logged is missing.
  """

  def __init__(self, workdir: str | os.PathLike[str],
               resume_step: int | None = None, enabled: bool | None = None):
    """Opens (and on resume, truncates) the workdir's logs.

    Args:
      workdir: the run's folder (made if absent) or bucket path.
      resume_step: the step the run resumes from (0 for a fresh start):
        lines of later steps are dropped, scalars for this step are merged
        into its line. None appends to what is there.
      enabled: whether to write at all; None means on process 0 only.
    """
    self._enabled = jax.process_index() == 0 if enabled is None else enabled
    self._step = None
    self._scalars = {}
    self._dirty = False
    if not self._enabled:
      return
    # A bucket object cannot be appended to or truncated: the file is kept
    # in a local copy and the whole of it uploaded after each line.
    self._upload_to = None
    if storage.is_remote(workdir):
      self._upload_to = storage.join(workdir, METRICS_FILE)
      path = pathlib.Path(tempfile.mkdtemp()) / METRICS_FILE
      if self._upload_to.exists():
        path.write_bytes(self._upload_to.read_bytes())
    else:
      pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
      path = pathlib.Path(workdir) / METRICS_FILE
    last_line = None
    if resume_step is not None:
      last_line = _drop_after(path, resume_step)
      if self._upload_to is not None:
        self._upload_to.write_bytes(path.read_bytes())
    self._file = path.open('ab')
    self._line_start = self._file.tell()
    if last_line is not None:
      # The resumed run may log the checkpoint's step again (a fresh run's
      # step 0 after an attempt that saved nothing): that adds to its line.
      record = json.loads(last_line)
      self._step = record.pop('step')
      self._scalars = {tag: _from_json(v) for tag, v in record.items()}
      self._line_start -= len(last_line)
    self._tensorboard = tensorboardX.SummaryWriter(
        # tensorboardX writes gs:// and s3:// paths itself.
        f'{storage.absolute(workdir)}/{TENSORBOARD_DIR}',
        purge_step=None if resume_step is None else resume_step + 1,
        # tensorboardX names event files by the second and opens them for
        # writing: a second writer started within the same second would wipe
        # the first one's file without a unique suffix.
        filename_suffix=f'.{time.time_ns()}')

  def _active(self) -> bool:
    """False on a disabled writer; raises once the writer is closed."""
    if self._enabled and self._file.closed:
      raise RuntimeError('MetricWriter is closed')
    return self._enabled

  def _write_line(self) -> None:
    """Writes (or rewrites, after a flush) the current step's line."""
    if not self._dirty:
      return
    record = {'step': self._step,
              **{tag: _to_json(v) for tag, v in self._scalars.items()}}
    self._file.truncate(self._line_start)
    self._file.write(json.dumps(record, allow_nan=False).encode() + b'\n')
    self._file.flush()
    self._dirty = False
    if self._upload_to is not None:
      self._upload_to.write_bytes(pathlib.Path(self._file.name).read_bytes())

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Logs scalars (Python, numpy or jax numbers) for `step`."""
    if not self._active():
      return
    step = int(step)
    values = {tag: _scalar(tag, value) for tag, value in scalars.items()}
    if 'step' in values:
      raise ValueError("'step' is reserved for the step number")
    if step != self._step:
      self._write_line()
      self._line_start = self._file.tell()
      self._step, self._scalars = step, {}
    self._scalars.update(values)
    self._dirty = True
    for tag, value in values.items():
      self._tensorboard.add_scalar(tag, float(value), step)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """Logs uint8 RGB images, [H, W, 3] or a batch [N, H, W, 3] (a grid)."""
    if not self._active():
      return
    for name, image in images.items():
      image = np.asarray(image)
      if (image.dtype != np.uint8 or image.ndim not in (3, 4)
          or image.shape[-1] != 3):
        raise ValueError(f'{name}: expected uint8 [H, W, 3] or [N, H, W, 3], '
                         f'got {image.dtype} {image.shape}')
      if image.ndim == 4:
        image = tb_utils.make_grid(image.transpose(0, 3, 1, 2))
        image = image.transpose(1, 2, 0)
      # Encoded here with OpenCV (BGR): tensorboardX's own image summaries
      # need Pillow, which the project does not otherwise use.
      ok, png = cv2.imencode('.png', np.ascontiguousarray(image[..., ::-1]))
      if not ok:
        raise ValueError(f'{name}: PNG encoding failed')
      height, width, channels = image.shape
      self._tensorboard.file_writer.add_summary(
          summary_pb2.Summary(value=[summary_pb2.Summary.Value(
              tag=name, image=summary_pb2.Summary.Image(
                  height=height, width=width, colorspace=channels,
                  encoded_image_string=png.tobytes()))]), step)

  def write_text(self, step: int, name: str, text: str) -> None:
    """Logs text; TensorBoard renders it as Markdown (indent code by 4)."""
    if self._active():
      self._tensorboard.add_text(name, text, step)

  def write_hparams(
      self, hparams: Mapping[str, Any] | ml_collections.ConfigDict,
      metric_tags: Sequence[str] = ()) -> None:
    """Logs hyperparameters for TensorBoard's HParams tab.

    Args:
      hparams: possibly nested; nested keys are joined with '.'. Numbers,
        strings and bools are kept, other values shown as strings, None
        skipped.
      metric_tags: scalar tags to show beside the hyperparameters.
    """
    if not self._active():
      return
    flat = {}
    for name, value in _flatten(hparams).items():
      keep = value is None or isinstance(value, (bool, int, float, str))
      flat[name] = value if keep else str(value)
    experiment, session_start, _ = tb_summary.hparams(
        flat, dict.fromkeys(metric_tags, 0.0))
    # Written into this run's own event files (tensorboardX's add_hparams
    # would open a separate run folder), and with no "session ended"
    # record, since the run has just begun.
    self._tensorboard.file_writer.add_summary(experiment)
    self._tensorboard.file_writer.add_summary(session_start)

  def flush(self) -> None:
    """Writes the current step's line and pending TensorBoard events."""
    if self._active():
      self._write_line()
      self._tensorboard.flush()

  def close(self) -> None:
    """Flushes and closes; closing again does nothing."""
    if not self._enabled or self._file.closed:
      return
    self.flush()
    self._file.close()
    self._tensorboard.close()
    if self._upload_to is not None:
      # The bucket holds the file; the local copy's folder is ours alone.
      shutil.rmtree(pathlib.Path(self._file.name).parent)

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
