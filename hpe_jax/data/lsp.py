"""Leeds Sports Pose (LSP) and its extension LSPET: 14-joint single-person data.

Both come as ``images/`` plus one ``joints.mat`` whose two layouts differ:

* LSP (``im0001.jpg`` ...): ``joints`` is [3, 14, N]; row 2 is 1 where the
  joint is OCCLUDED, so every joint is labelled: flag 1 -> v=1, 0 -> v=2.
* LSPET (``im00001.jpg`` ...): ``joints`` is [14, 3, N]; column 2 is 1 where
  the joint is VISIBLE (-> v=2). A joint with flag 0 is absent when the
  annotators left its coordinates at or below 0 (-> v=0, x=y=0; all such
  joints in the released file), otherwise labelled but hidden (-> v=1).

The layout is recognised by the array's shape and must agree with `variant`.
Coordinates are MATLAB 1-based and become pixel-index by subtracting 1.

Image sizes are not stored in the annotations, and decoding 12,000 images to
learn them would dominate start-up, so `files.image_size` reads them from the
JPEG/PNG headers on first use (a few tens of bytes per file) and the reader
caches them per image.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging
import numpy as np

from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import skeletons

@dataclasses.dataclass(frozen=True)
class _Variant:
  """What distinguishes LSP from LSPET on disk and in the id space."""
  file_pattern: str
  layout: tuple[int, int]  # Leading two dims of the joints array.
  id_offset: int
  splits: tuple[str, ...]


_VARIANTS = {
    'lsp': _Variant('im%04d.jpg', (3, 14), 0, ('train', 'test', 'all')),
    # Offset keeps LSPET ids apart from LSP's when the two are concatenated.
    'lspet': _Variant('im%05d.jpg', (14, 3), 100000, ('train', 'all')),
}
_LSP_NUM_TRAIN = 1000  # Standard split: im0001-im1000 train, the rest test.


def _joints_to_keypoints(joints: np.ndarray, variant: str) -> np.ndarray:
  """[N, 14, 3] pixel-index keypoints from the raw ``joints.mat`` array."""
  if variant == 'lsp':
    raw = joints.transpose(2, 1, 0)  # [3, 14, N] -> [N, 14, 3]
    v = np.where(raw[..., 2] == 1, 1, 2)
  else:
    raw = joints.transpose(2, 0, 1)  # [14, 3, N] -> [N, 14, 3]
    absent = (raw[..., 0] <= 0) & (raw[..., 1] <= 0)
    v = np.where(raw[..., 2] == 1, 2, np.where(absent, 0, 1))
  xy = np.where(v[..., None] > 0, raw[..., :2] - 1, 0)
  return np.concatenate([xy, v[..., None]], -1).astype(np.float32)


class LeedsSportsPose(example.ImageDataset):
  """LSP or LSPET (see the module docstring), one person per image.

  Attributes:
    root: dataset folder with ``joints.mat`` and ``images/``.
    variant: ``'lsp'`` or ``'lspet'``.
    split: ``'train'`` (LSP im0001-im1000, or all of LSPET), ``'test'``
      (LSP im1001-im2000) or ``'all'``.
  """
  skeleton = skeletons.LSP14

  def __init__(self, root: str, split: str = 'train', variant: str = 'lsp'):
    if variant not in _VARIANTS:
      raise ValueError(f'variant must be one of {sorted(_VARIANTS)}, '
                       f'got {variant!r}')
    spec = _VARIANTS[variant]
    if split not in spec.splits:
      raise ValueError(f'{variant} has splits {spec.splits}, got {split!r}')
    self.root = root
    self.variant = variant
    self.split = split
    self.name = f'{variant}_{split}'
    self._image_dir = os.path.join(root, 'images')
    self._file_pattern = spec.file_pattern
    self._id_offset = spec.id_offset
    if not os.path.isdir(self._image_dir):
      raise example.DatasetError(
          f'{self._image_dir}: image folder does not exist')

    mat_path = os.path.join(root, 'joints.mat')
    joints = self._load_joints(mat_path, variant)
    keypoints = _joints_to_keypoints(joints, variant)
    indices = np.arange(len(keypoints))
    if variant == 'lsp' and split != 'all':
      train = indices < _LSP_NUM_TRAIN
      indices = indices[train if split == 'train' else ~train]
    finite = np.isfinite(keypoints[indices]).all((1, 2))
    for i in indices[~finite]:
      logging.warning('%s: skipping %s, non-finite joint coordinates',
                      mat_path, self._file_pattern % (i + 1))
    self.num_skipped = int((~finite).sum())
    self._indices = indices[finite]
    self._keypoints = keypoints
    self._sizes: dict[int, tuple[int, int]] = {}

  @staticmethod
  def _load_joints(mat_path: str, variant: str) -> np.ndarray:
    joints = files.load_mat(mat_path).get('joints')
    if joints is None:
      raise example.DatasetError(f'{mat_path}: has no "joints" variable')
    expected = _VARIANTS[variant].layout
    if joints.ndim != 3 or joints.shape[:2] != expected:
      raise example.DatasetError(
          f'{mat_path}: "joints" has shape {joints.shape}, expected '
          f'[{expected[0]}, {expected[1]}, N] for {variant} (LSP is '
          '[3, 14, N], LSPET [14, 3, N])')
    return np.asarray(joints, np.float64)

  def __len__(self) -> int:
    return len(self._indices)

  def _image_path(self, index: int) -> str:
    return os.path.join(self._image_dir,
                        self._file_pattern % (self._indices[index] + 1))

  def annotation(self, index: int) -> example.Example:
    path = self._image_path(index)
    if index not in self._sizes:
      self._sizes[index] = files.image_size(path)
    height, width = self._sizes[index]
    # A copy, so callers may augment in place without touching the index.
    keypoints = self._keypoints[self._indices[index]][None].copy()
    return dict(
        image_id=int(self._id_offset + self._indices[index] + 1),
        image_path=path, height=int(height), width=int(width),
        keypoints=keypoints,
        boxes=example.boxes_from_keypoints(keypoints),
        head_boxes=np.full((1, 4), np.nan, np.float32),
        is_crowd=np.zeros((1,), bool))

  def load_pixels(self, index: int,
                  annotation: example.Example) -> example.Example:
    return {'image': files.read_image(annotation['image_path'])}
