"""COCO person keypoints (and COCO-style files) through pycocotools.

`CocoKeypoints` gives one example per image of the JSON, in image-id order,
with the person annotations of that image in annotation-id order: 17 COCO
keypoints, ``bbox`` as x1, y1, x2, y2, crowd regions flagged in ``is_crowd``
and person masks decoded by pycocotools from polygons, uncompressed or
compressed RLE. Instances files (person annotations without
``keypoints``, such as ``instances_val2017.json``) read the same way, their
people with boxes and masks and no labelled joint, for the mask tasks. The
same reader loads the synthetic-people exporter's folders
(``annotations.json`` with RLE masks, ``images/``, ``parts/``).

The validated dataset is also handed to a `pycocotools.coco.COCO` object
(`CocoKeypoints.coco`) so evaluation scores against exactly the annotations
the reader uses.

`load_detections` reads a COCO detection results file for top-down
inference from detected person boxes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
import contextlib
import io
import json
import os
from typing import Any

from absl import logging
from etils import epath
import numpy as np
from pycocotools import coco as pycocotools_coco
from pycocotools import mask as mask_utils

from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import part_masks
from hpe_jax.data import skeletons

PERSON_CATEGORY_ID = 1

# Fields that mmpose-converted files (e.g. OCHuman) store as Python literals
# in strings, such as 'bbox': '[250, 112, 475, 751]'.
_LITERAL_FIELDS = {
    'images': ('id', 'height', 'width'),
    'annotations': ('id', 'image_id', 'category_id', 'iscrowd',
                    'num_keypoints', 'area', 'bbox', 'keypoints',
                    'segmentation'),
}


class _MalformedEntry(ValueError):
  """One JSON entry is unusable; it is skipped and counted."""


def _load_json(path: str) -> Any:
  if not os.path.isfile(path):
    raise example.DatasetError(f'{path}: file does not exist')
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise example.DatasetError(f'{path}: invalid JSON ({e})') from e


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: Any, what: str, size: int | None = None) -> np.ndarray:
  """`value` as a flat float64 array of finite numbers (of `size`)."""
  if not isinstance(value, (list, tuple)) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
    raise _MalformedEntry(f'{what} is not a list of numbers')
  array = np.asarray(value, np.float64)
  if size is not None and array.shape != (size,):
    raise _MalformedEntry(f'{what} has {len(array)} numbers, expected {size}')
  if not np.isfinite(array).all():
    raise _MalformedEntry(f'{what} has non-finite numbers')
  return array


def _normalise(entry: Any, fields: tuple[str, ...]) -> dict[str, Any]:
  """A copy of `entry` with stringified literal `fields` parsed."""
  if not isinstance(entry, dict):
    raise _MalformedEntry(f'entry is a {type(entry).__name__}, not an object')
  entry = dict(entry)
  for field in fields:
    if isinstance(entry.get(field), str):
      try:
        entry[field] = ast.literal_eval(entry[field])
      except (ValueError, SyntaxError) as e:
        raise _MalformedEntry(f'{field} {entry[field][:40]!r} is not a '
                              'literal') from e
  return entry


def _check_image(image: dict[str, Any]) -> None:
  if not _is_int(image.get('id')):
    raise _MalformedEntry(f'id {image.get("id")!r} is not an integer')
  if not isinstance(image.get('file_name'), str) or not image['file_name']:
    raise _MalformedEntry('file_name is missing')
  for key in ('height', 'width'):
    if not _is_int(image.get(key)) or image[key] <= 0:
      raise _MalformedEntry(f'{key} {image.get(key)!r} is not a positive '
                            'integer')


def _compressed_rle_runs(counts: str) -> np.ndarray:
  """Run lengths of a compressed COCO RLE string (pycocotools' format).

  Each run is a little-endian series of 5-bit groups stored as characters
  from 48 on; bit 0x20 continues the series and bit 0x10 of the last group
  is the sign. From the third run on, a run is stored as its difference to
  the run two before.
  """
  runs = []
  value = shift = 0
  for char in counts:
    code = ord(char) - 48
    if not 0 <= code < 64:
      raise _MalformedEntry(f'RLE counts contain {char!r}')
    value |= (code & 0x1F) << shift
    shift += 5
    if code & 0x20:
      continue
    if code & 0x10:
      value -= 1 << shift
    if len(runs) > 2:
      value += runs[-2]
    runs.append(value)
    value = shift = 0
  if shift:
    raise _MalformedEntry('RLE counts end inside a run')
  return np.array(runs, np.int64)


def _check_segmentation(segm: Any, height: int, width: int) -> None:
  """Polygons or RLE that pycocotools can rasterise at this image size."""
  if isinstance(segm, list):
    if not segm:
      raise _MalformedEntry('segmentation is empty')
    for polygon in segm:
      coords = _numbers(polygon, 'segmentation polygon')
      # pycocotools reads a 4-number "polygon" as a box, so 3 points minimum.
      if len(coords) < 6 or len(coords) % 2:
        raise _MalformedEntry(
            f'segmentation polygon has {len(coords)} coordinates')
  elif isinstance(segm, dict):
    size = segm.get('size')
    if list(size or ()) != [height, width]:
      raise _MalformedEntry(f'RLE size {size!r} is not the image size '
                            f'[{height}, {width}]')
    counts = segm.get('counts')
    if isinstance(counts, list):
      runs = _numbers(counts, 'RLE counts')
    elif isinstance(counts, str):
      runs = _compressed_rle_runs(counts)
    else:
      raise _MalformedEntry('RLE counts are neither a string nor a list')
    # pycocotools decodes RLE that does not cover the image into garbage.
    if (runs < 0).any() or runs.sum() != height * width:
      raise _MalformedEntry('RLE runs do not cover the image')
  else:
    raise _MalformedEntry('segmentation is neither polygons nor RLE')


def _check_person(ann: dict[str, Any], images: dict[int, Any],
                  num_joints: int) -> None:
  """Validates a person annotation and fills fields evaluation relies on."""
  if not _is_int(ann.get('image_id')) or ann['image_id'] not in images:
    raise _MalformedEntry(f'image_id {ann.get("image_id")!r} is not an '
                          'image of the file')
  ann['iscrowd'] = ann.get('iscrowd', 0)
  if ann['iscrowd'] not in (0, 1):
    raise _MalformedEntry(f'iscrowd {ann["iscrowd"]!r} is not 0 or 1')
  if 'keypoints' not in ann:
    # Crowd regions and the people of instances files (e.g.
    # instances_val2017.json) carry no joints: every joint is unlabelled,
    # and the person keeps its box and mask. COCOeval reads keypoints of all.
    ann['keypoints'] = [0] * (3 * num_joints)
  keypoints = _numbers(ann.get('keypoints'), 'keypoints',
                       3 * num_joints).reshape(num_joints, 3)
  if not np.isin(keypoints[:, 2], (0, 1, 2)).all():
    raise _MalformedEntry('keypoint visibility outside {0, 1, 2}')
  ann.setdefault('num_keypoints', int((keypoints[:, 2] > 0).sum()))
  x, y, w, h = _numbers(ann.get('bbox'), 'bbox', 4)
  if w < 0 or h < 0:
    raise _MalformedEntry(f'bbox has negative size {w} x {h}')
  ann.setdefault('area', float(w * h))
  image = images[ann['image_id']]
  _check_segmentation(ann.get('segmentation'), image['height'],
                      image['width'])


class CocoKeypoints(example.ImageDataset):
  """COCO person keypoints with masks (see the module docstring).

  Besides the COCO format itself the reader accepts files whose numeric
  fields are Python literals in strings, as some mmpose conversions write
  them (``'bbox': '[250, 112, 475, 751]'``, ``'segmentation': "{'counts':
  ...}"``, ids and keypoints as strings); those fields are parsed with
  `ast.literal_eval` before pycocotools sees them. Missing ``num_keypoints``
  / ``area`` are derived from the keypoints / box, annotations without
  keypoints (crowd regions, instances files) get zeros and a file without
  ``categories`` gets COCO's person category, all of which COCOeval needs.

  Malformed image entries and person annotations (wrong keypoint count,
  non-finite numbers, negative box size, broken segmentation, unknown image
  or duplicate id) are skipped, counted in `num_skipped` and logged; the
  `coco` object holds only what is left. Annotations of other categories
  are ignored.

  Attributes:
    annotation_file: the JSON file.
    coco: `pycocotools.coco.COCO` of the images and valid person annotations.
    image_ids: the image id of each example.
  """
  skeleton = skeletons.COCO17
  has_masks = True

  def __init__(self, annotation_file: str, image_dir: str,
               parts_dir: str | None = None, min_keypoints: int = 0,
               skip_empty_images: bool = False, name: str = ''):
    """Builds the index.

    Args:
      annotation_file: COCO keypoints or instances JSON.
      image_dir: folder of the images' ``file_name``s.
      parts_dir: optional folder of ``<image file stem>.png`` BODY_PARTS6
        part maps.
      min_keypoints: non-crowd people with fewer labelled keypoints are left
        out of the examples (they stay in `coco` for evaluation).
      skip_empty_images: leave out images without non-crowd people.
      name: dataset name for logs and messages; '' names it by
        `annotation_file`, which says which file of a run is at fault.
    """
    self.name = name or annotation_file
    self.annotation_file = annotation_file
    self._image_dir = image_dir
    self._parts_dir = parts_dir
    self.part_schema = None if parts_dir is None else skeletons.BODY_PARTS6
    for d in (image_dir, parts_dir):
      if d is not None and not os.path.isdir(d):
        raise example.DatasetError(f'{d}: folder does not exist')
    data = _load_json(annotation_file)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ('images', 'annotations')):
      raise example.DatasetError(
          f'{annotation_file}: expected an object with "images" and '
          '"annotations" lists')

    self.num_skipped = 0
    images = {}
    for i, entry in enumerate(data['images']):
      try:
        image = _normalise(entry, _LITERAL_FIELDS['images'])
        _check_image(image)
        if image['id'] in images:
          raise _MalformedEntry('duplicate image id')
      except _MalformedEntry as e:
        self._skip('image', entry, i, e)
        continue
      images[image['id']] = image
    annotations = {}
    for i, entry in enumerate(data['annotations']):
      try:
        ann = _normalise(entry, _LITERAL_FIELDS['annotations'])
        if ann.get('category_id') != PERSON_CATEGORY_ID:
          continue
        if not _is_int(ann.get('id')) or ann['id'] in annotations:
          raise _MalformedEntry('missing or duplicate annotation id')
        _check_person(ann, images, self.num_joints)
      except _MalformedEntry as e:
        self._skip('annotation', entry, i, e)
        continue
      annotations[ann['id']] = ann

    self.coco = pycocotools_coco.COCO()
    self.coco.dataset = {
        **data,
        'images': list(images.values()),
        'annotations': list(annotations.values()),
        'categories': data.get('categories') or [dict(
            id=PERSON_CATEGORY_ID, name='person', supercategory='person',
            keypoints=list(self.skeleton.joint_names))],
    }
    with quiet(False):
      self.coco.createIndex()

    self.image_ids = []
    self._ann_ids = []
    for image_id in sorted(images):
      people = [
          a for a in sorted(self.coco.imgToAnns[image_id],
                            key=lambda a: a['id'])
          if a['iscrowd'] or
          np.count_nonzero(np.asarray(a['keypoints'][2::3])) >= min_keypoints]
      if skip_empty_images and all(a['iscrowd'] for a in people):
        continue
      self.image_ids.append(image_id)
      self._ann_ids.append([a['id'] for a in people])

  def _skip(self, kind: str, entry: Any, position: int,
            error: Exception) -> None:
    entry_id = entry.get('id') if isinstance(entry, dict) else None
    logging.warning('%s: skipping %s id %r (entry %d): %s',
                    self.annotation_file, kind, entry_id, position, error)
    self.num_skipped += 1

  def __len__(self) -> int:
    return len(self.image_ids)

  def annotation(self, index: int) -> example.Example:
    image = self.coco.imgs[self.image_ids[index]]
    anns = [self.coco.anns[i] for i in self._ann_ids[index]]
    ann = example.empty_people(self.num_joints)
    if anns:
      boxes = np.array([a['bbox'] for a in anns], np.float32)
      boxes[:, 2:] += boxes[:, :2]
      ann.update(
          keypoints=np.array([a['keypoints'] for a in anns],
                             np.float32).reshape(len(anns), -1, 3),
          boxes=boxes,
          head_boxes=np.full((len(anns), 4), np.nan, np.float32),
          is_crowd=np.array([bool(a['iscrowd']) for a in anns]))
    ann.update(image_id=image['id'],
               image_path=os.path.join(self._image_dir, image['file_name']),
               height=image['height'], width=image['width'])
    return ann

  def load_pixels(self, index: int,
                  annotation: example.Example) -> example.Example:
    pixels = {'image': files.read_image(annotation['image_path'])}
    shape = (annotation['height'], annotation['width'])
    masks = np.zeros((0,) + shape, np.uint8)
    ann_ids = self._ann_ids[index]
    if ann_ids:
      masks = np.stack([self.coco.annToMask(self.coco.anns[i])
                        for i in ann_ids]).astype(np.uint8)
    pixels['person_masks'] = masks
    if self._parts_dir is not None:
      stem = os.path.splitext(os.path.basename(annotation['image_path']))[0]
      pixels['part_map'] = part_masks.read_part_map(
          os.path.join(self._parts_dir, stem + '.png'), self.part_schema,
          shape)
    return pixels


def load_detections(
    path: str, coco_dataset_or_image_ids: CocoKeypoints | Iterable[int] | None,
    min_score: float = 0.0,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """Reads person boxes from a COCO detection results file.

  Args:
    path: JSON list of ``{image_id, category_id, bbox: [x, y, w, h],
      score}``.
    coco_dataset_or_image_ids: the dataset the detections are for, or its
      image ids; None: any integer image id (e.g. frame numbers).
    min_score: detections scoring lower are dropped.

  Returns:
    For every image id of the dataset (None: every id in the file), ``(boxes, scores)``: float32 [N, 4]
    x1, y1, x2, y2 and float32 [N] of its person detections, highest score
    first (N may be 0). Other categories are ignored; entries for unknown
    image ids and malformed entries are skipped, counted and logged.

  Raises:
    example.DatasetError: the file is missing or not a JSON list.
  """
  image_ids = (coco_dataset_or_image_ids.image_ids
               if isinstance(coco_dataset_or_image_ids, CocoKeypoints)
               else coco_dataset_or_image_ids)

  def parse(entry):
    x, y, w, h = _numbers(entry.get('bbox'), 'bbox', 4)
    if w < 0 or h < 0:
      raise _MalformedEntry(f'bbox has negative size {w} x {h}')
    return np.array([x, y, x + w, y + h], np.float32)

  detections = {}
  for image_id, (boxes, scores) in _read_results(
      path, image_ids, parse, 'detections', min_score).items():
    detections[image_id] = (np.array(boxes, np.float32).reshape(-1, 4),
                            np.asarray(scores, np.float32))
  return detections


def load_keypoint_results(
    path: str, image_ids: Iterable[int], num_joints: int | None = None,
    min_score: float = 0.0) -> dict[int, tuple[np.ndarray, np.ndarray]]:
  """Reads people's keypoints from a COCO keypoint results file.

  Args:
    path: JSON list of ``{image_id, category_id, keypoints: [x, y, s] * K,
      score}`` (what ``python -m hpe_jax.predict`` writes).
    image_ids: the image ids the results are for.
    num_joints: K; None takes it from the file's first person entry.
    min_score: people scoring lower are dropped.

  Returns:
    For every image id, ``(keypoints, scores)``: float32 [N, K, 3] (the
    third value is the joint's score) and [N], highest score first.
    Malformed entries are skipped, counted and logged.

  Raises:
    example.DatasetError: the file is missing or not a JSON list.
  """

  if num_joints is None:
    entries = _load_json(path)
    first = next((e for e in entries if isinstance(e, dict) and
                  e.get('category_id') == PERSON_CATEGORY_ID and
                  isinstance(e.get('keypoints'), list)), None
                 ) if isinstance(entries, list) else None
    num_joints = len(first['keypoints']) // 3 if first else 0

  def parse(entry):
    return _numbers(entry.get('keypoints'), 'keypoints', 3 * num_joints
                    ).reshape(num_joints, 3).astype(np.float32)

  results = {}
  for image_id, (people, scores) in _read_results(
      path, image_ids, parse, 'people', min_score).items():
    results[image_id] = (np.array(people, np.float32).reshape(
        -1, num_joints, 3),
                         np.asarray(scores, np.float32))
  return results


def _read_results(path: str, image_ids: Iterable[int] | None, parse,
                  what: str, min_score: float
                  ) -> dict[int, tuple[list, list]]:
  """Person entries of a COCO results file, parsed, per image id.

  Returns {image_id: (parsed values, scores)} for every id in `image_ids`
  (None: every id in the file), highest score first; entries of other
  categories are ignored, and malformed ones (unknown image id, bad
  numbers) are skipped and logged.
  """
  any_id = image_ids is None
  found = {} if any_id else {int(i): [] for i in image_ids}
  entries = _load_json(path)
  if not isinstance(entries, list):
    raise example.DatasetError(f'{path}: expected a list of {what}')
  skipped = []
  for i, entry in enumerate(entries):
    try:
      if not isinstance(entry, dict):
        raise _MalformedEntry('not an object')
      if entry.get('category_id') != PERSON_CATEGORY_ID:
        continue
      if not _is_int(entry.get('image_id')) or (
          not any_id and entry['image_id'] not in found):
        raise _MalformedEntry(f'unknown image_id {entry.get("image_id")!r}')
      value = parse(entry)
      score, = _numbers([entry.get('score')], 'score')
    except _MalformedEntry as e:
      skipped.append(f'entry {i}: {e}')
      continue
    if score >= min_score:
      found.setdefault(entry['image_id'], []).append((score, value))
  if skipped:
    logging.warning('%s: skipped %d of %d %s, e.g. %s', path, len(skipped),
                    len(entries), what, '; '.join(skipped[:3]))
  out = {}
  for image_id, rows in found.items():
    rows.sort(key=lambda row: -row[0])
    out[image_id] = ([v for _, v in rows], [s for s, _ in rows])
  return out

# Writing: ground truth built from examples (the synthetic exporter's
# annotation files, and the in-memory ground truth of instance evaluation)
# and prediction results, in the form the reader above and pycocotools read
# back: ``bbox`` as x, y, w, h from x1, y1, x2, y2 boxes, masks as
# compressed RLE, keypoints in pixel-index coordinates.


def quiet(verbose: bool):
  """Context that swallows pycocotools' progress prints unless `verbose`."""
  if verbose:
    return contextlib.nullcontext()
  return contextlib.redirect_stdout(io.StringIO())


def encode_mask(mask) -> dict[str, Any]:
  """Compressed RLE of a [H, W] mask, JSON-serialisable."""
  mask = np.asarray(mask)
  if mask.ndim != 2:
    raise ValueError(f'expected a [H, W] mask, got shape {mask.shape}')
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  return dict(size=[int(s) for s in rle['size']],
              counts=rle['counts'].decode('ascii'))


def coco_categories(
    skeleton: skeletons.Skeleton | None = skeletons.COCO17
) -> list[dict[str, Any]]:
  """The COCO person category with `skeleton`'s names and 1-based limbs.

  A dataset without a skeleton (None) gets a category without keypoints.
  """
  names, limbs = [], []
  if skeleton is not None:
    names = list(skeleton.joint_names)
    limbs = (skeleton.limb_indices + 1).tolist()
  return [dict(id=PERSON_CATEGORY_ID, name='person',
               supercategory='person', keypoints=names, skeleton=limbs)]


def coco_image_entry(ex: example.Example, file_name: str) -> dict[str, Any]:
  """The COCO ``images`` entry of one example."""
  return dict(id=int(ex['image_id']), file_name=file_name,
              height=int(ex['height']), width=int(ex['width']))


def coco_annotation_entries(ex: example.Example,
                            first_id: int) -> list[dict[str, Any]]:
  """COCO keypoint annotations of one example, ids from `first_id` on.

  Every row of the example becomes one annotation, in order, so annotation
  ``first_id + p`` is person ``p`` of ``person_masks`` (which the example
  must have). Crowd rows (``is_crowd``) get ``iscrowd=1`` and, as in COCO,
  zero keypoints; COCOeval then uses their masks only to forgive detections
  that fall on them.

  Args:
    ex: an example with ``person_masks``; its skeleton may have any number
      of joints K (``keypoints`` [P, K, 3]).
    first_id: the annotation id of the first row.

  Returns:
    ``[{'id', 'image_id', 'category_id', 'keypoints': 3K numbers,
    'num_keypoints', 'bbox', 'area', 'segmentation', 'iscrowd'}, ...]``.
  """
  masks = ex['person_masks']
  keypoints = np.asarray(ex['keypoints'])
  crowd = np.asarray(ex.get('is_crowd', np.zeros(len(masks), bool)), bool)
  if not len(masks) == len(keypoints) == len(ex['boxes']) == len(crowd):
    raise ValueError(f'image {ex["image_id"]}: {len(masks)} masks, '
                     f'{len(keypoints)} poses, {len(ex["boxes"])} boxes and '
                     f'{len(crowd)} crowd flags')
  entries = []
  for p, mask in enumerate(masks):
    x1, y1, x2, y2 = (float(v) for v in ex['boxes'][p])
    kp = np.zeros_like(keypoints[p]) if crowd[p] else keypoints[p]
    flat = []
    for x, y, v in kp:
      # Visibility as an int, as COCO files write it.
      flat += [float(x), float(y), int(v)]
    entries.append(dict(
        id=first_id + p, image_id=int(ex['image_id']),
        category_id=PERSON_CATEGORY_ID, keypoints=flat,
        num_keypoints=int((kp[:, 2] > 0).sum()),
        bbox=[x1, y1, x2 - x1, y2 - y1], area=int(mask.sum()),
        segmentation=encode_mask(mask),
        iscrowd=int(crowd[p])))
  return entries


def coco_ground_truth(dataset) -> pycocotools_coco.COCO:
  """The pycocotools ground truth of every image of `dataset`.

  COCO-format readers already hold one (``dataset.coco``), validated and
  with their crowd regions; other datasets are converted image by image
  (`coco_annotation_entries`), which loads every example once, pixels included, since
  the masks come with them.

  Args:
    dataset: an `example.ImageDataset`; without a ``coco`` attribute it must
      have person masks (``has_masks``).

  Raises:
    ValueError: the dataset has neither a ``coco`` object nor masks.
  """
  existing = getattr(dataset, 'coco', None)
  if isinstance(existing, pycocotools_coco.COCO):
    return existing
  if not dataset.has_masks:
    raise ValueError(f'dataset {dataset.name!r} has no person masks, so it '
                     'has no COCO instance ground truth')
  images, annotations = [], []
  for i in range(len(dataset)):
    ex = dataset[i]
    # The image file is never read by COCOeval.
    images.append(coco_image_entry(
        ex, os.path.basename(ex.get('image_path', ''))))
    annotations += coco_annotation_entries(
        ex, len(annotations) + 1)
  gt = pycocotools_coco.COCO()
  gt.dataset = dict(images=images, annotations=annotations,
                    categories=coco_categories(dataset.skeleton))
  with quiet(False):
    gt.createIndex()
  return gt


def keypoint_results(image_ids, keypoints, scores,
                     category_id: int = PERSON_CATEGORY_ID
                     ) -> list[dict[str, Any]]:
  """COCO keypoint results, one dict per predicted person.

  Args:
    image_ids: [N] COCO image ids.
    keypoints: [N, K, 3] x, y (image pixel-index coordinates) and per-joint
      score.
    scores: [N] person scores, which rank the people for AP.
    category_id: COCO category of the people.

  Returns:
    ``[{'image_id', 'category_id', 'keypoints': 3K floats, 'score'}, ...]``.
  """
  image_ids, scores = np.asarray(image_ids), np.asarray(scores)
  keypoints = np.asarray(keypoints, np.float64)
  if not len(image_ids) == len(keypoints) == len(scores):
    raise ValueError(f'{len(image_ids)} image ids, {len(keypoints)} poses and '
                     f'{len(scores)} scores')
  flat = keypoints.reshape(len(keypoints), -1).tolist()
  return [{'image_id': int(i), 'category_id': int(category_id),
           'keypoints': k, 'score': float(s)}
          for i, k, s in zip(image_ids, flat, scores)]


def instance_results(image_ids, boxes, scores, masks=None, keypoints=None
                     ) -> list[dict[str, Any]]:
  """COCO results, one dict per predicted person.

  Args:
    image_ids: [N] COCO image ids.
    boxes: [N, 4] x1, y1, x2, y2 in image pixels.
    scores: [N] person scores, which rank the people for AP.
    masks: optional [N, H_i, W_i] bool or 0/1 masks at the size of each
      person's image; a sequence of arrays when the images differ in size.
    keypoints: optional [N, K, 3] x, y and per-joint score.

  Returns:
    ``[{'image_id', 'category_id', 'score', 'bbox': [x, y, w, h],
    'segmentation': compressed RLE, 'keypoints': 3K floats}, ...]``, the
    last two only when given; plain Python values, ready for `json.dump`.
  """
  image_ids = np.asarray(image_ids).reshape(-1)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  scores = np.asarray(scores, np.float64).reshape(-1)
  n = len(image_ids)
  sizes = {'boxes': len(boxes), 'scores': len(scores)}
  if masks is not None:
    sizes['masks'] = len(masks)
  if keypoints is not None:
    keypoints = np.asarray(keypoints, np.float64)
    sizes['keypoints'] = len(keypoints)
  if any(s != n for s in sizes.values()):
    raise ValueError(f'{n} image ids but {sizes}')
  xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
  results = []
  for i in range(n):
    r = {'image_id': int(image_ids[i]),
         'category_id': PERSON_CATEGORY_ID,
         'score': float(scores[i]), 'bbox': xywh[i].tolist()}
    if masks is not None:
      r['segmentation'] = encode_mask(masks[i])
    if keypoints is not None:
      r['keypoints'] = keypoints[i].reshape(-1).tolist()
    results.append(r)
  return results


def write_results(path: str | os.PathLike, results: list[dict[str, Any]]):
  """Writes COCO results as the JSON list pycocotools reads."""
  # epath: the path may be on a bucket, like the workdir it is in.
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(results), encoding='utf-8')
