"""Your own data: a folder of images with any of label maps, instance masks,
box files and keypoints (``dataset.name=folder``).

Every annotation is found from the image's stem (file name without
extension) through a pattern relative to the dataset root. A pattern with
``{stem}`` names the file, e.g. ``PedMasks/{stem}_mask.png``; a pattern
without it is a folder holding ``<stem>.png`` (``<stem>.txt`` for boxes).

* ``images``: the folder of images (jpg, jpeg, png, bmp); every image in it
  is an example, sorted by name.
* ``part_maps``: label PNGs in the labels of a part schema (a built-in name or
  a schema file, `skeletons.load_schema`): body parts, clothing classes, or
  just background / person. 255 means "person, no part label".
* ``instances``: PNGs holding k on the pixels of the k-th person (k = 1, 2,
  ...; 0 and 255 are not people); they give person masks and boxes.
* ``boxes``: text files with one ``x1 y1 x2 y2`` line per person (commas
  allowed, ``#`` starts a comment); with ``instances`` the counts must agree
  and these boxes replace the masks' boxes.
* ``keypoints``: one JSON file mapping an image's stem (or file name) to its
  people, each ``[[x, y, v], ...]`` in the skeleton's joint order or
  ``{"keypoints": [[x, y, v], ...], "box": [x1, y1, x2, y2]}``; x, y in
  pixels as in COCO files, v as in COCO (0 unlabelled, 1 hidden, 2 visible).
  With ``instances`` the k-th person is the k-th instance. Images the file
  does not name have no labelled people.

The split comes from list files of stems (or of ``stem ...`` / image paths,
one per line) or else from a hash of each stem: a fraction of the stems goes
to evaluation and stays there as images are added (at least one image when
the fraction is above 0). A missing annotation file of one image is a damaged
sample (skipped, counted and logged); a missing folder, list or keypoints
file stops the run with one line.
"""

from __future__ import annotations

import os
import re
import zlib

import numpy as np

from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import image_folder
from hpe_jax.data import json_file
from hpe_jax.data import part_masks
from hpe_jax.data import skeletons

SPLITS = ('train', 'eval')


def annotation_path(root: str, pattern: str, stem: str, ext: str) -> str:
  """The file of `stem` under `pattern` (see the module docstring)."""
  if '{stem}' in pattern:
    return os.path.join(root, pattern.replace('{stem}', stem))
  return os.path.join(root, pattern, stem + ext)


def _pattern_folder(root: str, pattern: str) -> str:
  return os.path.dirname(annotation_path(root, pattern, 'x', ''))


def split_by_hash(stems: list[str], eval_fraction: float,
                  split: str) -> list[str]:
  """The stems of `split` when no list file gives it."""
  if not 0 <= eval_fraction < 1:
    raise example.DatasetError(
        f'dataset.folder.eval_fraction must be in [0, 1), got {eval_fraction}')
  # crc32 rather than hash(): the same on every host and Python process.
  bucket = {s: zlib.crc32(s.encode()) / 2**32 for s in stems}
  eval_stems = {s for s in stems if bucket[s] < eval_fraction}
  if eval_fraction > 0 and not eval_stems and len(stems) > 1:
    eval_stems = {min(stems, key=bucket.get)}
  return [s for s in stems if (s in eval_stems) == (split == 'eval')]


def read_boxes(path: str) -> np.ndarray:
  """[P, 4] boxes of a box text file; raises DamagedSampleError."""
  if not os.path.isfile(path):
    raise example.DamagedSampleError(path, 'box file is missing')
  boxes = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      line = line.split('#')[0].strip()
      if not line:
        continue
      values = re.split(r'[\s,]+', line)
      try:
        box = [float(v) for v in values]
      except ValueError:
        box = []
      if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise example.DamagedSampleError(
            path, f'line {n} is not "x1 y1 x2 y2" with x2 > x1, y2 > y1')
      boxes.append(box)
  return np.asarray(boxes, np.float32).reshape(-1, 4)


def _read_keypoints(path: str, num_joints: int) -> dict[str, list]:
  """Stem -> people of a keypoints JSON, checked for shape."""
  data = json_file.read(path, 'keypoints file', example.DatasetError)
  if not isinstance(data, dict):
    raise example.DatasetError(f'{path}: expected an object mapping image '
                               'stems to lists of people')
  out = {}
  for key, people in data.items():
    rows = []
    for p, person in enumerate(people if isinstance(people, list) else [None]):
      box = None
      if isinstance(person, dict):
        box, person = person.get('box'), person.get('keypoints')
      kp = np.asarray(person if person is not None else [], np.float32)
      if kp.shape != (num_joints, 3) or (
          box is not None and np.shape(box) != (4,)):
        raise example.DatasetError(
            f'{path}: {key!r} person {p}: expected {num_joints} [x, y, v] '
            'joints (and an optional [x1, y1, x2, y2] box)')
      rows.append((kp, None if box is None else np.asarray(box, np.float32)))
    out[os.path.splitext(key)[0]] = rows
  return out


class FolderDataset(example.ImageDataset):
  """One split of a folder dataset (see the module docstring).

  Attributes:
    root: the dataset folder; every pattern is relative to it.
    split: ``'train'`` or ``'eval'``.
  """

  def __init__(self, root: str, split: str, *, images: str = 'images',
               part_maps: str = '', instances: str = '', boxes: str = '',
               keypoints: str = '',
               part_schema: skeletons.PartSchema | None = None,
               skeleton: skeletons.Skeleton | None = None,
               split_list: str = '', eval_fraction: float = 0.1,
               name: str = 'folder'):
    if split not in SPLITS:
      raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    if part_maps and part_schema is None:
      raise example.DatasetError(
          'dataset.folder.part_maps needs dataset.folder.part_schema (a '
          'built-in name or a .json schema file)')
    if keypoints and skeleton is None:
      raise example.DatasetError(
          'dataset.folder.keypoints needs dataset.folder.skeleton (a built-in '
          'name or a .json schema file)')
    self.root = root
    self.split = split
    self.name = f'{name}_{split}'
    self.skeleton = skeleton
    self.part_schema = part_schema if part_maps else None
    self.has_masks = bool(instances)
    self._patterns = dict(part_maps=part_maps, instances=instances,
                          boxes=boxes)
    for kind, pattern in self._patterns.items():
      if pattern and not os.path.isdir(_pattern_folder(root, pattern)):
        raise example.DatasetError(
            f'{_pattern_folder(root, pattern)}: folder of dataset.folder.'
            f'{kind} does not exist')
    paths = image_folder.list_images(os.path.join(root, images))
    by_stem = {os.path.splitext(os.path.basename(p))[0]: p for p in paths}
    if split_list:
      stems = files.read_stem_list(os.path.join(root, split_list))
      missing = [s for s in stems if s not in by_stem]
      if missing:
        raise example.DatasetError(
            f'{os.path.join(root, split_list)}: {len(missing)} stem(s) have '
            f'no image in {os.path.join(root, images)}, e.g. {missing[:3]}')
    else:
      stems = split_by_hash(sorted(by_stem), eval_fraction, split)
    if not stems:
      raise example.DatasetError(
          f'{os.path.join(root, images)}: no images in the {split} split')
    self._stems = stems
    self._image_paths = [by_stem[s] for s in stems]
    self._keypoints = (_read_keypoints(os.path.join(root, keypoints),
                                       skeleton.num_joints)
                       if keypoints else {})
    self._people: dict[int, example.Example] = {}

  def __len__(self) -> int:
    return len(self._stems)

  def _path(self, index: int, kind: str) -> str:
    ext = '.txt' if kind == 'boxes' else '.png'
    return annotation_path(self.root, self._patterns[kind],
                           self._stems[index], ext)

  def _read_people(self, index: int) -> example.Example:
    """Keypoints and boxes of image `index` from its annotation files."""
    rows = self._keypoints.get(self._stems[index], [])
    num_joints = self.num_joints
    keypoints = np.zeros((len(rows), num_joints, 3), np.float32)
    boxes = np.zeros((len(rows), 4), np.float32)
    if rows:
      keypoints = np.stack([kp for kp, _ in rows])
      boxes = np.stack([example.boxes_from_keypoints(kp[None])[0]
                        if box is None else box for kp, box in rows])
    counts = {}
    if rows:
      counts['keypoints'] = len(rows)
    if self._patterns['instances']:
      boxes = example.boxes_from_masks(
          part_masks.read_instance_masks(self._path(index, 'instances')))
      counts['instances'] = len(boxes)
    if self._patterns['boxes']:
      boxes = read_boxes(self._path(index, 'boxes'))
      counts['boxes'] = len(boxes)
    if len(set(counts.values())) > 1:
      raise example.DamagedSampleError(
          self._image_paths[index], 'people counts differ: ' + ', '.join(
              f'{n} in {k}' for k, n in counts.items()))
    num_people = len(boxes)
    if not rows:
      keypoints = np.zeros((num_people, num_joints, 3), np.float32)
    return dict(keypoints=keypoints, boxes=boxes.astype(np.float32),
                head_boxes=np.full((num_people, 4), np.nan, np.float32),
                is_crowd=np.zeros((num_people,), bool))

  def annotation(self, index: int) -> example.Example:
    if index not in self._people:
      height, width = files.image_size(self._image_paths[index])
      people = self._read_people(index)
      example.check_annotation(people, self.num_joints,
                               self._image_paths[index])
      self._people[index] = dict(people, height=height, width=width)
    ann = dict(self._people[index])
    ann.update(image_id=index + 1, image_path=self._image_paths[index])
    return ann

  def load_pixels(self, index: int,
                  annotation: example.Example) -> example.Example:
    image = files.read_image(annotation['image_path'])
    pixels = {'image': image}
    if self.part_schema is not None:
      pixels['part_map'] = part_masks.read_part_map(
          self._path(index, 'part_maps'), self.part_schema, image.shape[:2])
    if self.has_masks:
      pixels['person_masks'] = part_masks.read_instance_masks(
          self._path(index, 'instances'), image.shape[:2])
    return pixels
