"""Reading dataset files, with errors that name the file.

Images and label maps are per-sample files: a missing or undecodable one
raises `example.DamagedSampleError`, which the pipeline skips, counts and
logs. MATLAB annotation files are dataset files: a missing or unreadable one
raises `example.DatasetError`, which stops the run.

Image sizes of datasets that do not store them (LSP, MPII) come from the
JPEG/PNG headers (`image_size`), a few tens of bytes per file instead of a
full decode.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import cv2
import numpy as np
import scipy.io

from hpe_jax.data import example


def _decode(path: str, flags: int, what: str) -> np.ndarray:
  data = np.fromfile(path, np.uint8) if os.path.isfile(path) else None
  if data is None:
    raise example.DamagedSampleError(path, f'{what} file is missing')
  decoded = cv2.imdecode(data, flags)
  if decoded is None:
    raise example.DamagedSampleError(path, f'{what} file cannot be decoded')
  return decoded


def read_image(path: str) -> np.ndarray:
  """Decodes an image file to uint8 RGB [H, W, 3]."""
  return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR, 'image'),
                      cv2.COLOR_BGR2RGB)


def read_label_png(path: str) -> np.ndarray:
  """Reads a single-channel uint8 label map [H, W]."""
  labels = _decode(path, cv2.IMREAD_UNCHANGED, 'label')
  if labels.ndim != 2 or labels.dtype != np.uint8:
    raise example.DamagedSampleError(
        path, f'expected a single-channel 8-bit label map, got shape '
        f'{labels.shape} dtype {labels.dtype}')
  return labels


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic);
# C4 (DHT), C8 (JPG) and CC (DAC) share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def _header_size(path: str) -> tuple[int, int] | None:
  """(height, width) from a JPEG or PNG header, None if it cannot tell."""
  with open(path, 'rb') as f:
    head = f.read(2)
    if head == _PNG_SIGNATURE[:2]:
      head += f.read(22)
      if head[:8] != _PNG_SIGNATURE or head[12:16] != b'IHDR':
        return None
      width, height = struct.unpack('>II', head[16:24])
      return height, width
    if head != b'\xff\xd8':
      return None
    while True:
      byte = f.read(1)
      if byte != b'\xff':
        return None
      marker = f.read(1)
      while marker == b'\xff':  # Fill bytes may pad any marker.
        marker = f.read(1)
      if not marker:
        return None
      code = marker[0]
      if code in _JPEG_STANDALONE:
        continue
      length_bytes = f.read(2)
      if len(length_bytes) != 2 or code == 0xDA:  # Scan data before a frame.
        return None
      length = struct.unpack('>H', length_bytes)[0]
      if code in _JPEG_SOF:
        frame = f.read(5)
        if len(frame) != 5:
          return None
        height, width = struct.unpack('>HH', frame[1:5])
        return (height, width) if height and width else None
      payload = f.read(length - 2)
      if code == 0xE1 and payload.startswith(b'Exif\x00\x00'):
        # The decoder may rotate by the EXIF orientation, which swaps the
        # frame's sides; decoding is the only answer that surely agrees.
        return None


def image_size(path: str) -> tuple[int, int]:
  """(height, width) of the image as `read_image` would decode it.

  Reads the JPEG frame header or PNG IHDR; other formats, JPEGs with EXIF
  data (possibly rotated on decoding) and unparsable headers are decoded.

  Returns:
    (height, width), or (0, 0) when the file is missing or cannot be
    decoded: loading its pixels then raises `example.DamagedSampleError`,
    which is where the pipeline expects damaged samples to surface.
  """
  try:
    size = _header_size(path)
  except OSError:
    return 0, 0
  if size is not None:
    return size
  try:
    return read_image(path).shape[:2]
  except example.DamagedSampleError:
    return 0, 0


def read_stem_list(path: str) -> list[str]:
  """Stems from a split list: a stem, or an image path (then the rest of
  the line, e.g. its label path, is ignored), first on each line."""
  if not os.path.isfile(path):
    raise example.DatasetError(f'{path}: list file does not exist')
  with open(path) as f:
    stems = [os.path.splitext(os.path.basename(line.split()[0]))[0]
             for line in f if line.strip()]
  if not stems:
    raise example.DatasetError(f'{path}: list file is empty')
  return stems


def load_mat(path: str, **kwargs) -> dict[str, Any]:
  """`scipy.io.loadmat`, raising DatasetError naming a missing or bad file."""
  if not os.path.isfile(path):
    raise example.DatasetError(f'{path}: file does not exist')
  try:
    return scipy.io.loadmat(path, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    # scipy's reader fails on garbage with assorted exception types.
    raise example.DatasetError(
        f'{path}: not a readable MATLAB file ({e})') from e
