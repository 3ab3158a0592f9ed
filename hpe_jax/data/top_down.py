"""Top-down samples: one record per person, cropped by its box.

A `PersonRecord` names an image and a box (a ground-truth person, or a
detection at evaluation time); `TopDownSample` turns it into the fixed-shape
arrays the model sees. Keys of a sample (K joints, input h x w, output
h/s x w/s):

==============  ==================  =========================================
key             shape               meaning
==============  ==================  =========================================
image           uint8 [h, w, 3]     the warped crop
keypoints       float32 [K, 3]      x, y on the output grid, visibility
affine          float32 [2, 3]      image -> output-grid coordinates
mask            uint8 [h/s, w/s]    this person's mask (0/1), 255 unknown
part_map        uint8 [h/s, w/s]    this person's parts, 255 unknown
gt_keypoints    float32 [K, 3]      keypoints in image coordinates
box             float32 [4]         the crop's source box (image coords)
head_box        float32 [4]         for PCKh, NaN if unknown
score           float32             detection score (1 for ground truth)
image_id        int32
person_index    int32               index in the image, -1 for detections
valid           bool                False for padding and damaged samples
==============  ==================  =========================================
"""

from __future__ import annotations

import dataclasses

from absl import logging
import ml_collections
import numpy as np

from hpe_jax.data import augment
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons
from hpe_jax.data import warp as warp_lib


@dataclasses.dataclass(frozen=True)
class PersonRecord:
  image_index: int
  person_index: int  # -1 for a detected box
  box: tuple[float, float, float, float]
  score: float = 1.0


def person_records(dataset: example_lib.ImageDataset,
                   min_keypoints: int = 1) -> list[PersonRecord]:
  """One record per non-crowd person with enough labelled keypoints.

  An image whose annotation cannot be read is skipped and logged.
  """
  records = []
  damaged = []
  for i in range(len(dataset)):
    try:
      ann = dataset.annotation(i)
    except example_lib.DamagedSampleError as e:
      damaged.append(str(e))
      continue
    labelled = (ann['keypoints'][..., 2] > 0).sum(-1)
    for p in range(len(ann['boxes'])):
      box = ann['boxes'][p]
      if ann['is_crowd'][p] or labelled[p] < min_keypoints:
        continue
      if box[2] <= box[0] or box[3] <= box[1]:
        continue
      records.append(PersonRecord(i, p, tuple(map(float, box))))
  if damaged:
    logging.warning('%s: skipped %d image(s) with damaged annotations, e.g. '
                    '%s', dataset.name, len(damaged), '; '.join(damaged[:3]))
  return records


def detection_records(dataset: example_lib.ImageDataset,
                      detections: dict[int, tuple[np.ndarray, np.ndarray]]
                      ) -> list[PersonRecord]:
  """One record per detected box (image_id -> (boxes xyxy, scores))."""
  records = []
  for i in range(len(dataset)):
    image_id = dataset.annotation(i)['image_id']
    boxes, scores = detections.get(image_id, (np.zeros((0, 4)), ()))
    records.extend(PersonRecord(i, -1, tuple(map(float, b)), float(s))
                   for b, s in zip(boxes, scores))
  return records


class TopDownSample:
  """Builds the sample of a `PersonRecord` (see the module docstring)."""

  def __init__(self, dataset: example_lib.ImageDataset,
               geometry: warp_lib.Geometry, box_padding: float,
               augment_cfg: ml_collections.ConfigDict | None):
    self.dataset = dataset
    self.geometry = geometry
    self.box_padding = box_padding
    self.augment_cfg = augment_cfg

  def __call__(self, record: PersonRecord,
               rng: np.random.Generator | None = None):
    ds = self.dataset
    ex = ds[record.image_index]
    k = ds.num_joints
    p = record.person_index
    person_kp = (ex['keypoints'][p] if p >= 0 else
                 np.zeros((k, 3), np.float32))
    crop = augment.sample_crop(rng, record.box, person_kp, ds.skeleton,
                               self.geometry.aspect_ratio, self.box_padding,
                               self.augment_cfg)
    warp = warp_lib.make_warp(crop, self.geometry)
    image = augment.photometric(
        rng, warp_lib.warp_image(ex['image'], warp, self.geometry),
        self.augment_cfg)
    out_shape = self.geometry.output_size
    unknown = np.full(out_shape, skeletons.IGNORE_LABEL, np.uint8)
    mask = unknown
    if ds.has_masks and p >= 0:
      mask = warp_lib.warp_labels(ex['person_masks'][p], warp, self.geometry)
    part_map = unknown
    if ds.part_schema is not None:
      part_map = warp_lib.warp_part_map(ex['part_map'], warp, self.geometry,
                                        ds.part_schema)
      if mask is not unknown:
        # Other people's parts are background for this person's crop.
        part_map = np.where(mask == 1, part_map, 0).astype(np.uint8)
    head_box = (ex['head_boxes'][p] if p >= 0 else
                np.full(4, np.nan, np.float32))
    return dict(
        image=image,
        keypoints=warp_lib.warp_keypoints(person_kp, warp, ds.skeleton),
        affine=warp.to_output.astype(np.float32),
        mask=mask,
        part_map=part_map,
        gt_keypoints=person_kp.astype(np.float32),
        box=np.asarray(record.box, np.float32),
        head_box=np.asarray(head_box, np.float32),
        score=np.float32(record.score),
        image_id=np.int32(ex['image_id']),
        person_index=np.int32(p),
        valid=np.bool_(True),
    )

  def placeholder(self):
    """An all-zero sample with valid=False (padding, damaged samples)."""
    h, w = self.geometry.input_size
    oh, ow = self.geometry.output_size
    k = self.dataset.num_joints
    return dict(
        image=np.zeros((h, w, 3), np.uint8),
        keypoints=np.zeros((k, 3), np.float32),
        affine=np.array([[1, 0, 0], [0, 1, 0]], np.float32),
        mask=np.full((oh, ow), skeletons.IGNORE_LABEL, np.uint8),
        part_map=np.full((oh, ow), skeletons.IGNORE_LABEL, np.uint8),
        gt_keypoints=np.zeros((k, 3), np.float32),
        box=np.zeros(4, np.float32),
        head_box=np.full(4, np.nan, np.float32),
        score=np.float32(0),
        image_id=np.int32(-1),
        person_index=np.int32(-1),
        valid=np.bool_(False),
    )
