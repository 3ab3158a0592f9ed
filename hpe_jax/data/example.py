"""The per-image example every dataset reader returns, and the reader base class.

Every reader (COCO, LSP, MPII, part masks, synthetic people) is a random-access
`ImageDataset`. ``dataset.annotation(i)`` returns the labels of image ``i``
without touching pixels; ``dataset[i]`` adds the decoded pixels. Keys:

==============  =====================  ======================================
key             shape / type           meaning
==============  =====================  ======================================
image_id        int                    dataset-wide id (COCO ``image_id``)
image_path      str                    file the pixels come from ('' if made)
height, width   int                    image size in pixels
keypoints       float32 [P, K, 3]      x, y, visibility (0 unlabelled,
                                       1 hidden, 2 visible), pixel-index
                                       coordinates; K is 0 without skeleton
boxes           float32 [P, 4]         person boxes x1, y1, x2, y2
head_boxes      float32 [P, 4]         head boxes for PCKh (NaN if unknown)
is_crowd        bool [P]               COCO crowd regions (not people)
image           uint8 [H, W, 3]        RGB, only from ``dataset[i]``
person_masks    uint8 [P, H, W]        0/1, only if ``dataset.has_masks``
part_map        uint8 [H, W]           labels of ``dataset.part_schema``,
                                       255 = person without part label
==============  =====================  ======================================

A sample that cannot be read (missing or undecodable image, broken mask)
raises `DamagedSampleError` naming the file; the input pipeline skips it,
counts it and logs it. A dataset *file* that is missing or malformed raises
`DatasetError` when the reader is built, which stops the run.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from hpe_jax import errors
from hpe_jax.data import skeletons

Example = dict[str, Any]

ANNOTATION_KEYS = ('image_id', 'image_path', 'height', 'width', 'keypoints',
                   'boxes', 'head_boxes', 'is_crowd')


class DatasetError(errors.ReportableError):
  """A dataset file is missing or malformed; the message names the file."""


class DamagedSampleError(Exception):
  """One sample inside a dataset cannot be read; skipped by the pipeline."""

  def __init__(self, path: str, reason: str):
    super().__init__(f'{path}: {reason}')
    self.path = path
    self.reason = reason


class LabelsOutsideSchema(DamagedSampleError):
  """A label map holds values its part schema does not declare."""


def empty_people(num_joints: int) -> Example:
  """Annotation arrays for an image with no people."""
  return dict(keypoints=np.zeros((0, num_joints, 3), np.float32),
              boxes=np.zeros((0, 4), np.float32),
              head_boxes=np.zeros((0, 4), np.float32),
              is_crowd=np.zeros((0,), bool))


def image_box(height: int, width: int) -> np.ndarray:
  """x1, y1, x2, y2 of a whole image: its outer pixel edges, which lie half
  a pixel outside the first and last pixel centres."""
  return np.array([-0.5, -0.5, width - 0.5, height - 0.5], np.float32)


def boxes_from_keypoints(keypoints: np.ndarray) -> np.ndarray:
  """[P, 4] tight boxes around the labelled keypoints (zeros if none)."""
  labelled = keypoints[..., 2] > 0
  big = np.float32(np.inf)
  x = keypoints[..., 0]
  y = keypoints[..., 1]
  boxes = np.stack([np.where(labelled, x, big).min(-1),
                    np.where(labelled, y, big).min(-1),
                    np.where(labelled, x, -big).max(-1),
                    np.where(labelled, y, -big).max(-1)], -1)
  return np.where(labelled.any(-1, keepdims=True), boxes, 0).astype(np.float32)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
  """[P, 4] boxes (pixel edges) around the pixels of [P, H, W] masks."""
  boxes = np.zeros((len(masks), 4), np.float32)
  for p, m in enumerate(masks):
    ys, xs = np.nonzero(m)
    if len(xs):
      boxes[p] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
  return boxes


def check_annotation(ex: Example, num_joints: int, where: str) -> None:
  """Raises DamagedSampleError when annotation arrays are inconsistent."""
  kp = ex['keypoints']
  p = len(kp)
  shapes = {'keypoints': (p, num_joints, 3), 'boxes': (p, 4),
            'head_boxes': (p, 4), 'is_crowd': (p,)}
  for k, shape in shapes.items():
    if ex[k].shape != shape:
      raise DamagedSampleError(
          where, f'{k} has shape {ex[k].shape}, expected {shape}')
  if not np.isfinite(kp).all() or not np.isfinite(ex['boxes']).all():
    raise DamagedSampleError(where, 'non-finite keypoint or box coordinates')
  if not np.isin(kp[..., 2], (0, 1, 2)).all():
    raise DamagedSampleError(where, 'keypoint visibility outside {0, 1, 2}')


class ImageDataset(abc.ABC):
  """Random-access dataset of `Example`s (see the module docstring).

  Subclasses set `name`, `skeleton` (or None), `part_schema` (or None),
  `has_masks`, and `num_skipped` (annotations dropped as damaged when the
  reader was built), and implement `__len__`, `annotation` and `load_pixels`.
  """
  name: str = ''
  skeleton: skeletons.Skeleton | None = None
  part_schema: skeletons.PartSchema | None = None
  has_masks: bool = False
  num_skipped: int = 0

  @abc.abstractmethod
  def __len__(self) -> int:
    ...

  @abc.abstractmethod
  def annotation(self, index: int) -> Example:
    """Labels of image `index` (ANNOTATION_KEYS), without pixels."""

  @abc.abstractmethod
  def load_pixels(self, index: int, annotation: Example) -> Example:
    """Returns ``image`` plus ``person_masks``/``part_map`` when available.

    Raises DamagedSampleError for a sample that cannot be read.
    """

  def __getitem__(self, index: int) -> Example:
    if not 0 <= index < len(self):
      raise IndexError(f'{self.name}: index {index} out of range')
    ex = dict(self.annotation(index))
    ex.update(self.load_pixels(index, ex))
    h, w = ex['image'].shape[:2]
    if (h, w) != (ex['height'], ex['width']):
      # Annotations are in the coordinates of the size they declare; a
      # mismatch means the wrong image or a resized copy.
      raise DamagedSampleError(
          ex['image_path'], f'image is {w}x{h} but annotated as '
          f'{ex["width"]}x{ex["height"]}')
    return ex

  @property
  def num_joints(self) -> int:
    return 0 if self.skeleton is None else self.skeleton.num_joints
