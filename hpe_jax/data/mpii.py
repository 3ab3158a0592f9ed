"""MPII Human Pose in the list-JSON form of mmpose / HRNet (16 joints).

Each JSON entry is one person: ``image`` (file name), ``joints`` [16][2],
``joints_vis`` [16] (1 labelled, 0 not), ``center`` [2] and ``scale``. The
reader groups entries by image into one example per image (in order of first
appearance; image ids are 1-based positions in that order).

Conventions, following the reference implementations:

* Coordinates are MATLAB 1-based and become pixel-index by subtracting 1
  (joints, centre and head boxes). Unlabelled joints are x = y = v = 0;
  labelled ones are v = 2 (the list format has no hidden flag).
* The person box is MPII's rough (centre, scale) box: the centre moves down
  by 15 * scale px, then a square of side 200 * scale px is centred there.
  The input pipeline pads it further (1.25 for MPII).
* Head boxes for PCKh come from, in order of preference: the entry's own
  ``headbox`` ([[x1, y1], [x2, y2]] or [x1, y1, x2, y2]); `headboxes_file`,
  the official evaluation ``.mat`` whose ``headboxes_src`` [2, 2, N] lists
  the JSON's entries in order; or else an estimate, a square centred between
  upper neck and head top with their distance as side. Estimates set
  `head_boxes_estimated` and are logged, since PCKh against them is only
  approximately the official number.

The JSON carries no image sizes; they come from the image headers on first
use (`files.image_size`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import logging
import numpy as np

from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import skeletons

_BOX_SHIFT = 15.0  # Centre shift down, in units of scale.
_BOX_SIDE = 200.0  # Box side, in units of scale.


def _head_box(raw: Any) -> np.ndarray:
  """[4] x1, y1, x2, y2 from either head-box form, still 1-based."""
  box = np.asarray(raw, np.float64).reshape(-1)
  if box.shape != (4,) or not np.isfinite(box).all():
    raise ValueError(f'head box {raw!r} is not 4 finite numbers')
  return box


def _parse_entry(entry: Any, num_joints: int) -> dict[str, Any]:
  """Validated arrays of one JSON entry.

  Raises:
    KeyError, TypeError, ValueError: the entry is malformed.
  """
  joints = np.asarray(entry['joints'], np.float64)
  vis = np.asarray(entry['joints_vis'], np.float64)
  center = np.asarray(entry['center'], np.float64)
  scale = float(entry['scale'])
  if not isinstance(entry['image'], str) or not entry['image']:
    raise ValueError(f'image {entry["image"]!r} is not a file name')
  if joints.shape != (num_joints, 2) or vis.shape != (num_joints,):
    raise ValueError(f'joints {joints.shape} / joints_vis {vis.shape}, '
                     f'expected ({num_joints}, 2) / ({num_joints},)')
  if not np.isin(vis, (0, 1)).all():
    raise ValueError('joints_vis outside {0, 1}')
  if center.shape != (2,) or not (np.isfinite(joints).all() and
                                  np.isfinite(center).all()):
    raise ValueError('non-finite or malformed joints / center')
  if not np.isfinite(scale) or scale <= 0:
    raise ValueError(f'scale {scale} is not positive')
  labelled = vis[:, None] > 0
  keypoints = np.concatenate(
      [np.where(labelled, joints - 1, 0), np.where(labelled, 2, 0)], -1)
  cx, cy = center - 1
  cy += _BOX_SHIFT * scale
  half = _BOX_SIDE * scale / 2
  return dict(
      image=entry['image'], keypoints=keypoints,
      box=np.array([cx - half, cy - half, cx + half, cy + half]),
      headbox=_head_box(entry['headbox']) - 1 if 'headbox' in entry else None)


def _estimate_head_box(keypoints: np.ndarray) -> np.ndarray:
  """Square between upper neck and head top, NaN if either is unlabelled."""
  neck = keypoints[skeletons.MPII16.index('upper_neck')]
  top = keypoints[skeletons.MPII16.index('head_top')]
  if neck[2] == 0 or top[2] == 0:
    return np.full(4, np.nan)
  mid = (neck[:2] + top[:2]) / 2
  half = np.linalg.norm(top[:2] - neck[:2]) / 2
  return np.concatenate([mid - half, mid + half])


def _load_headboxes(path: str, num_entries: int) -> np.ndarray:
  """[N, 4] 1-based head boxes from the official ``headboxes_src``."""
  src = files.load_mat(path).get('headboxes_src')
  if src is None:
    raise example.DatasetError(f'{path}: has no "headboxes_src" variable')
  if src.shape != (2, 2, num_entries):
    raise example.DatasetError(
        f'{path}: "headboxes_src" has shape {src.shape}, expected '
        f'(2, 2, {num_entries}) for the annotation file\'s entries')
  # [point, coordinate, entry] -> [entry, x1 y1 x2 y2]
  return np.asarray(src, np.float64).transpose(2, 0, 1).reshape(-1, 4)


class Mpii(example.ImageDataset):
  """MPII people grouped per image (see the module docstring).

  Attributes:
    head_boxes_estimated: True when some head boxes are estimated from the
      joints rather than annotated.
  """
  skeleton = skeletons.MPII16

  def __init__(self, annotation_file: str, image_dir: str,
               headboxes_file: str | None = None, name: str = 'mpii'):
    self.name = name
    self.annotation_file = annotation_file
    self._image_dir = image_dir
    if not os.path.isdir(image_dir):
      raise example.DatasetError(f'{image_dir}: image folder does not exist')
    entries = self._load_json(annotation_file)
    official = (None if headboxes_file is None else
                _load_headboxes(headboxes_file, len(entries)))

    self.num_skipped = 0
    self.head_boxes_estimated = False
    people: dict[str, list[dict[str, Any]]] = {}
    for i, entry in enumerate(entries):
      try:
        person = _parse_entry(entry, self.num_joints)
      except (KeyError, TypeError, ValueError) as e:
        logging.warning('%s: skipping entry %d (%s: %s)', annotation_file, i,
                        type(e).__name__, e)
        self.num_skipped += 1
        continue
      if person['headbox'] is None:
        if official is not None:
          person['headbox'] = official[i] - 1
        else:
          person['headbox'] = _estimate_head_box(person['keypoints'])
          self.head_boxes_estimated = True
      people.setdefault(person['image'], []).append(person)
    if self.head_boxes_estimated:
      logging.warning('%s: head boxes estimated from upper neck and head top '
                      '(no headbox in the entries, no headboxes_file); PCKh '
                      'is approximate', annotation_file)
    self._images = list(people)
    self._people = [people[image] for image in self._images]
    self._sizes: dict[int, tuple[int, int]] = {}

  @staticmethod
  def _load_json(path: str) -> list[Any]:
    if not os.path.isfile(path):
      raise example.DatasetError(f'{path}: annotation file does not exist')
    try:
      with open(path) as f:
        entries = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise example.DatasetError(f'{path}: invalid JSON ({e})') from e
    if not isinstance(entries, list):
      raise example.DatasetError(
          f'{path}: expected a list of person entries, got '
          f'{type(entries).__name__}')
    return entries

  def __len__(self) -> int:
    return len(self._images)

  def annotation(self, index: int) -> example.Example:
    path = os.path.join(self._image_dir, self._images[index])
    if index not in self._sizes:
      self._sizes[index] = files.image_size(path)
    height, width = self._sizes[index]
    people = self._people[index]
    return dict(
        image_id=index + 1, image_path=path,
        height=int(height), width=int(width),
        keypoints=np.stack([p['keypoints'] for p in people]).astype(
            np.float32),
        boxes=np.stack([p['box'] for p in people]).astype(np.float32),
        head_boxes=np.stack([p['headbox'] for p in people]).astype(
            np.float32),
        is_crowd=np.zeros((len(people),), bool))

  def load_pixels(self, index: int,
                  annotation: example.Example) -> example.Example:
    return {'image': files.read_image(annotation['image_path'])}
