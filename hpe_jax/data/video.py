"""Video in and out, for the predict command and the serving client.

`VideoReader` decodes a video file (or a camera, by its index) with OpenCV
into RGB frames, one at a time or in chunks of bounded length, so that a
long video never sits in memory whole; `FrameFolder` reads a folder of
frame images the same way, in file name order. `FrameDataset` presents a chunk as an
`ImageDataset` without people, so the predict command runs frames through
the same predictor as images. `VideoWriter` encodes RGB frames as MP4
(``mp4v``, which every OpenCV build writes; the codec needs even sizes, so
an odd width or height loses its last pixel column or row).

A file that cannot be opened, or whose first frame cannot be decoded, is a
one-line `example.DatasetError` naming it. A frame that fails to decode
before the end the container declares ends the reading there:
`VideoReader.error` says where, and the frames before it were delivered.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import cv2
import numpy as np

from hpe_jax import errors
from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import image_folder
from hpe_jax.data import skeletons

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')

# Some containers and cameras declare no frame rate; a video must have one.
DEFAULT_FPS = 30.0

# libav's own messages ("moov atom not found", "header damaged") would come
# before the one line naming the file; a user's setting is kept.
os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')


def is_video(path: str) -> bool:
  """Whether `path` names a video file (by its extension)."""
  return path.lower().endswith(VIDEO_EXTENSIONS)


class VideoReader:
  """The frames of a video file or a camera, RGB uint8 [H, W, 3], in order.

  Attributes:
    name: the file, or ``camera N``.
    fps: the declared frame rate (`DEFAULT_FPS` where none is declared).
    declared_frames: the frame count the container declares (0: unknown,
      as for cameras).
    height, width: the first frame's size.
    frames_read: frames decoded so far.
    error: why reading stopped before the declared end (None otherwise).
  """

  def __init__(self, source: str | int):
    """Opens `source` (a file path, or a camera index) and decodes its first
    frame; raises `example.DatasetError` when either fails."""
    is_file = isinstance(source, str)
    self.name = source if is_file else f'camera {source}'
    if is_file and not os.path.isfile(source):
      raise example.DatasetError(f'{source}: no such video file')
    # OpenCV warns about each backend that fails to open a camera.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
      self._capture = cv2.VideoCapture(source)
    finally:
      cv2.utils.logging.setLogLevel(level)
    if not self._capture.isOpened():
      raise example.DatasetError(
          f'{self.name}: cannot be opened as a video (damaged, or a format '
          'OpenCV cannot read)' if is_file else
          f'{self.name}: cannot be opened (no such camera, or in use)')
    fps = self._capture.get(cv2.CAP_PROP_FPS)
    self.fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
    self.declared_frames = max(
        int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    self.frames_read = 0
    self.error: str | None = None
    # Decoded ahead, so that a video without a single frame fails here,
    # before a model is loaded for it.
    self._next = self._read()
    if self._next is None:
      self.close()
      raise example.DatasetError(f'{self.name}: no frame could be decoded')
    self.height, self.width = self._next.shape[:2]

  def _read(self) -> np.ndarray | None:
    ok, frame = self._capture.read()
    if not ok:
      # OpenCV says only "no frame" at the end and at a damaged one alike;
      # the declared count tells them apart.
      if self.frames_read < self.declared_frames:
        self.error = (f'{self.name}: frame {self.frames_read} of '
                      f'{self.declared_frames} could not be decoded; '
                      'stopped there')
      return None
    self.frames_read += 1
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

  def frames(self) -> Iterator[np.ndarray]:
    """Yields the frames not yet read, to the end or the first that cannot
    be decoded (`error`)."""
    while self._next is not None:
      frame, self._next = self._next, self._read()
      yield frame

  def chunks(self, size: int) -> Iterator[list[np.ndarray]]:
    """`frames` in lists of `size` (the last one shorter)."""
    chunk = []
    for frame in self.frames():
      chunk.append(frame)
      if len(chunk) == size:
        yield chunk
        chunk = []
    if chunk:
      yield chunk

  def close(self) -> None:
    self._capture.release()

  def __enter__(self) -> VideoReader:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class FrameFolder:
  """The images of a folder as the frames of a video, in file name order
  (`VideoReader`'s interface; `names` are the file names)."""

  def __init__(self, path: str, fps: float = DEFAULT_FPS):
    self.name = path
    self.paths = image_folder.list_images(path)
    self.names = [os.path.basename(p) for p in self.paths]
    self.fps = fps
    self.declared_frames = len(self.paths)
    self.frames_read = 0
    self.error: str | None = None
    try:
      self.height, self.width = files.read_image(self.paths[0]).shape[:2]
    except example.DamagedSampleError as e:
      raise example.DatasetError(str(e)) from None

  def frames(self) -> Iterator[np.ndarray]:
    """Yields the frames, to the end or the first that cannot be decoded
    or differs in size from the first (`error`)."""
    for path in self.paths:
      try:
        frame = files.read_image(path)
      except example.DamagedSampleError as e:
        self.error = f'{e}; stopped there'
        return
      if frame.shape[:2] != (self.height, self.width):
        self.error = (f'{path}: {frame.shape[1]}x{frame.shape[0]}, the '
                      f'first frame is {self.width}x{self.height}; stopped '
                      'there')
        return
      self.frames_read += 1
      yield frame

  def close(self) -> None:
    pass

  def __enter__(self) -> FrameFolder:
    return self

  def __exit__(self, *exc_info) -> None:
    pass


def exit_status(reader: VideoReader | FrameFolder) -> int:
  """A command's exit status after reading `reader`: 1, with the reason
  printed, if it stopped before the end (`error`), else 0."""
  if reader.error:
    print(reader.error)
    return 1
  return 0


def open_frames(path: str, fps: float = DEFAULT_FPS
                ) -> VideoReader | FrameFolder:
  """A video file's `VideoReader`, or a folder's `FrameFolder` at `fps`."""
  if os.path.isdir(path):
    return FrameFolder(path, fps)
  return VideoReader(path)


class FrameDataset(example.ImageDataset):
  """Decoded frames as images without people; image ids are frame numbers
  (the first frame's is `first`)."""

  def __init__(self, frames: list[np.ndarray], first: int, path: str,
               skeleton: skeletons.Skeleton | None):
    self.name = os.path.basename(path)
    self.skeleton = skeleton
    self._frames, self._first, self._path = frames, first, path

  def __len__(self) -> int:
    return len(self._frames)

  def annotation(self, index: int) -> example.Example:
    h, w = self._frames[index].shape[:2]
    return dict(image_id=self._first + index, image_path=self._path,
                height=h, width=w, **example.empty_people(self.num_joints))

  def load_pixels(self, index: int, annotation: example.Example):
    return {'image': self._frames[index]}


class VideoWriter:
  """Writes RGB frames to an MP4 file at `fps`, at the first frame's size.

  The file is opened at the first frame, so a run that writes none leaves
  none; a path OpenCV cannot write raises `errors.ReportableError`.
  """

  def __init__(self, path: str, fps: float):
    self.path, self.fps = path, fps
    self.frames = 0
    self._writer = None

  def write(self, frame: np.ndarray) -> None:
    if self._writer is None:
      h, w = frame.shape[:2]
      self._writer = cv2.VideoWriter(
          self.path, cv2.VideoWriter_fourcc(*'mp4v'), self.fps, (w, h))
      if not self._writer.isOpened():
        raise errors.ReportableError(f'{self.path}: cannot write a video '
                                     'there')
    self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    self.frames += 1

  def close(self) -> None:
    if self._writer is not None:
      self._writer.release()

  def __enter__(self) -> VideoWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
