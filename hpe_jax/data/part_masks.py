"""Readers for per-pixel body-part maps: PASCAL-Part and label-PNG folders.

`PascalPart` reads the original PASCAL-Part annotations (one ``.mat`` per
image) and turns the person objects into person masks and a six-part map
(`skeletons.BODY_PARTS6`). `PartMapFolder` reads any folder of images with
same-named label PNGs (Pascal-Person-Part style 6-part maps, CIHP/LIP 20-class
parsing maps), optionally with instance PNGs. Neither has keypoints: their
examples have K = 0 joints.

`read_part_map` is the one place that checks a label PNG against its schema;
the COCO reader uses it for its optional part maps too.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from absl import logging
import numpy as np

from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import skeletons

_IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')


def read_part_map(path: str, schema: skeletons.PartSchema,
                  shape: tuple[int, int]) -> np.ndarray:
  """Reads a label PNG, checks it against `schema` and maps it to classes.

  Args:
    path: the label PNG.
    schema: labels the map may hold (plus `skeletons.IGNORE_LABEL`).
    shape: (height, width) of the image it labels.

  Returns:
    uint8 [H, W] class map (`schema`'s ignored labels become
    `skeletons.IGNORE_LABEL`, merged labels their class).

  Raises:
    example.DamagedSampleError: missing or undecodable file, wrong size, or
      labels outside the schema.
  """
  labels = files.read_label_png(path)
  if labels.shape != tuple(shape):
    raise example.DamagedSampleError(
        path, f'label map is {labels.shape[1]}x{labels.shape[0]} but the '
        f'image is {shape[1]}x{shape[0]}')
  bad = outside_schema(labels, schema)
  if bad:
    raise example.LabelsOutsideSchema(
        path, f'labels {bad} are not in schema {schema.name} '
        f'(0..{schema.num_file_labels - 1} or {skeletons.IGNORE_LABEL})')
  return schema.file_lut[labels]


def outside_schema(labels: np.ndarray,
                   schema: skeletons.PartSchema) -> list[int]:
  """The sorted values of a stored label map that `schema` does not know."""
  bad = (labels >= schema.num_file_labels) & (labels != skeletons.IGNORE_LABEL)
  return sorted(np.unique(labels[bad]).tolist())


def read_instance_masks(path: str,
                        shape: tuple[int, int] | None = None) -> np.ndarray:
  """[P, H, W] uint8 person masks of an instance PNG.

  The PNG holds k on the pixels of the k-th person (k = 1, 2, ...; 0 and 255
  are not people).

  Raises:
    example.DamagedSampleError: missing or undecodable file, or a size other
      than `shape` (height, width) when given.
  """
  ids = files.read_label_png(path)
  if shape is not None and ids.shape != tuple(shape):
    raise example.DamagedSampleError(
        path, f'instance map is {ids.shape[1]}x{ids.shape[0]}, image is '
        f'{shape[1]}x{shape[0]}')
  valid = ids != skeletons.IGNORE_LABEL
  people = np.arange(1, int(ids[valid].max(initial=0)) + 1, dtype=np.uint8)
  return (ids[None] == people[:, None, None]).astype(np.uint8)


def _people(num_people: int, boxes: np.ndarray) -> example.Example:
  """Annotation arrays of people known only by their masks (no joints)."""
  return dict(keypoints=np.zeros((num_people, 0, 3), np.float32),
              boxes=boxes.astype(np.float32),
              head_boxes=np.full((num_people, 4), np.nan, np.float32),
              is_crowd=np.zeros((num_people,), bool))


# PASCAL-Part person part names (l/r = the person's left/right) grouped into
# the six parts of Pascal-Person-Part.
_PASCAL_PART_GROUPS = {
    **dict.fromkeys(('head', 'hair', 'leye', 'reye', 'lear', 'rear', 'lebrow',
                     'rebrow', 'nose', 'mouth', 'neck'), 'head'),
    'torso': 'torso',
    **dict.fromkeys(('luarm', 'ruarm'), 'upper_arms'),
    **dict.fromkeys(('llarm', 'rlarm', 'lhand', 'rhand'), 'lower_arms'),
    **dict.fromkeys(('luleg', 'ruleg'), 'upper_legs'),
    **dict.fromkeys(('llleg', 'rlleg', 'lfoot', 'rfoot'), 'lower_legs'),
}
_PASCAL_PART_LABELS = {
    name: skeletons.BODY_PARTS6.label_names.index(group)
    for name, group in _PASCAL_PART_GROUPS.items()}


def _as_list(value: Any) -> list[Any]:
  """MATLAB struct arrays load as one struct or an array of them."""
  return list(value.ravel()) if isinstance(value, np.ndarray) else [value]


@dataclasses.dataclass
class _PascalPerson:
  mask: np.ndarray  # [H, W] 0/1
  parts: list[tuple[int, np.ndarray]]  # (BODY_PARTS6 label, [H, W] 0/1)


def _read_pascal_persons(path: str) -> list[_PascalPerson]:
  """Person objects of one PASCAL-Part ``.mat`` file, in file order.

  Raises:
    example.DatasetError: the file is unreadable or not in the expected form.
  """
  mat = files.load_mat(path, squeeze_me=True, struct_as_record=False)
  try:
    objects = _as_list(mat['anno'].objects)
    persons = []
    for obj in objects:
      if getattr(obj, 'class') != 'person':
        continue
      mask = np.asarray(obj.mask)
      shape = persons[0].mask.shape if persons else mask.shape
      parts = []
      for part in _as_list(obj.parts):
        if not hasattr(part, 'part_name'):  # An empty parts array.
          continue
        if part.part_name not in _PASCAL_PART_LABELS:
          raise ValueError(f'unknown person part {part.part_name!r}')
        parts.append((_PASCAL_PART_LABELS[part.part_name],
                      np.asarray(part.mask)))
      if any(m.ndim != 2 or m.shape != shape
             for m in [mask] + [m for _, m in parts]):
        raise ValueError('person and part masks differ in size')
      persons.append(_PascalPerson(mask, parts))
  except (KeyError, AttributeError, ValueError) as e:
    raise example.DatasetError(f'{path}: malformed PASCAL-Part annotation '
                               f'({e})') from e
  return persons


class PascalPart(example.ImageDataset):
  """PASCAL-Part persons with masks and a BODY_PARTS6 part map.

  ``root`` holds ``annotations_mat/<stem>.mat`` and ``images/<stem>.jpg``.
  Images without a person object are left out. Each person object gives a
  person mask and its box; the part map paints the persons in file order
  and, within a person, first the whole person mask as 255 ("person, no part
  label") and then its parts in file order, each overwriting what is below.
  This is exactly how the reference ``person_part_png`` maps were made (all
  eight fixture images agree pixel for pixel). Image ids are 1-based
  positions in stem order.

  A ``.mat`` file that cannot be read at construction is skipped, counted in
  `num_skipped` and logged: each file is one image's annotation.
  """
  skeleton = None
  part_schema = skeletons.BODY_PARTS6
  has_masks = True

  def __init__(self, root: str, name: str = 'pascal_part'):
    self.root = root
    self.name = name
    self._mat_dir = os.path.join(root, 'annotations_mat')
    self._image_dir = os.path.join(root, 'images')
    for d in (self._mat_dir, self._image_dir):
      if not os.path.isdir(d):
        raise example.DatasetError(f'{d}: folder does not exist')
    self._stems = []
    self._sizes = []
    self._boxes = []
    self.num_skipped = 0
    for file_name in sorted(os.listdir(self._mat_dir)):
      if not file_name.endswith('.mat'):
        continue
      path = os.path.join(self._mat_dir, file_name)
      try:
        persons = _read_pascal_persons(path)
      except example.DatasetError as e:
        logging.warning('Skipping %s', e)
        self.num_skipped += 1
        continue
      if not persons:
        continue
      masks = np.stack([p.mask for p in persons])
      self._stems.append(file_name[:-len('.mat')])
      self._sizes.append(masks.shape[1:])
      self._boxes.append(example.boxes_from_masks(masks))

  def __len__(self) -> int:
    return len(self._stems)

  def annotation(self, index: int) -> example.Example:
    height, width = self._sizes[index]
    ann = _people(len(self._boxes[index]), self._boxes[index])
    ann.update(image_id=index + 1,
               image_path=os.path.join(self._image_dir,
                                       self._stems[index] + '.jpg'),
               height=int(height), width=int(width))
    return ann

  def load_pixels(self, index: int,
                  annotation: example.Example) -> example.Example:
    image = files.read_image(annotation['image_path'])
    mat_path = os.path.join(self._mat_dir, self._stems[index] + '.mat')
    try:
      persons = _read_pascal_persons(mat_path)
    except example.DatasetError as e:
      raise example.DamagedSampleError(mat_path, str(e)) from e
    part_map = np.zeros(image.shape[:2], np.uint8)
    masks = []
    for person in persons:
      if person.mask.shape != part_map.shape:
        raise example.DamagedSampleError(
            mat_path, f'masks are {person.mask.shape}, image is '
            f'{part_map.shape}')
      masks.append(person.mask > 0)
      part_map[masks[-1]] = skeletons.IGNORE_LABEL
      for label, mask in person.parts:
        part_map[mask > 0] = label
    return {'image': image, 'part_map': part_map,
            'person_masks': np.stack(masks).astype(np.uint8)}


class PartMapFolder(example.ImageDataset):
  """Images with same-named label PNGs (and optionally instance PNGs).

  Example ``i`` is ``<image_dir>/<stem>.<jpg|jpeg|png>`` with the part map
  ``<label_dir>/<stem>.png`` in labels of `schema` (255 = person without a
  part label). Stems come from `list_file` (a stem or an ``image_path
  label_path ...`` line per image, as in CIHP's ``list/val_id.txt`` and
  ``list/val.txt``), or else are all PNGs in `label_dir`, sorted. Image ids
  are 1-based positions in that order.

  With `instance_dir`, ``<instance_dir>/<stem>.png`` holds k on the pixels
  of the k-th person (k = 1, 2, ...; 0 and 255 are not people) and gives
  person masks and boxes; `annotation` then decodes that PNG, so a damaged
  one raises `example.DamagedSampleError` from there. Without it there are
  no people (P = 0) and no masks.
  """
  skeleton = None

  def __init__(self, image_dir: str, label_dir: str,
               schema: skeletons.PartSchema, instance_dir: str | None = None,
               list_file: str | None = None, name: str = 'part_maps'):
    for d in (image_dir, label_dir, instance_dir):
      if d is not None and not os.path.isdir(d):
        raise example.DatasetError(f'{d}: folder does not exist')
    self.name = name
    self.part_schema = schema
    self.has_masks = instance_dir is not None
    self._label_dir = label_dir
    self._instance_dir = instance_dir
    if list_file is not None:
      self._stems = files.read_stem_list(list_file)
    else:
      self._stems = sorted(f[:-len('.png')] for f in os.listdir(label_dir)
                           if f.endswith('.png'))
    image_files = {}
    for f in os.listdir(image_dir):
      stem, ext = os.path.splitext(f)
      if ext.lower() in _IMAGE_EXTENSIONS:
        image_files[stem] = f
    # A stem without an image keeps a .jpg path so loading it reports the
    # missing file as a damaged sample.
    self._image_paths = [
        os.path.join(image_dir, image_files.get(s, s + '.jpg'))
        for s in self._stems]
    self._sizes: dict[int, tuple[int, int]] = {}

  def __len__(self) -> int:
    return len(self._stems)

  def _label_path(self, index: int) -> str:
    return os.path.join(self._label_dir, self._stems[index] + '.png')

  def _instance_path(self, index: int) -> str:
    return os.path.join(self._instance_dir, self._stems[index] + '.png')

  def annotation(self, index: int) -> example.Example:
    if index not in self._sizes:
      # Label PNGs match their image in size, and a PNG header is 24 bytes.
      self._sizes[index] = files.image_size(self._label_path(index))
    height, width = self._sizes[index]
    if self._instance_dir is None:
      ann = _people(0, np.zeros((0, 4), np.float32))
    else:
      masks = read_instance_masks(self._instance_path(index))
      ann = _people(len(masks), example.boxes_from_masks(masks))
    ann.update(image_id=index + 1, image_path=self._image_paths[index],
               height=int(height), width=int(width))
    return ann

  def load_pixels(self, index: int,
                  annotation: example.Example) -> example.Example:
    image = files.read_image(annotation['image_path'])
    pixels = {'image': image,
              'part_map': read_part_map(self._label_path(index),
                                        self.part_schema, image.shape[:2])}
    if self._instance_dir is not None:
      pixels['person_masks'] = read_instance_masks(self._instance_path(index),
                                                   image.shape[:2])
    return pixels
