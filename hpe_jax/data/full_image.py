"""Full-image samples: the whole image letterboxed into the model input.

Used by segmentation and multi-person models. People are padded to a fixed
count `max_people` with a validity mask so batches have static shapes; when
an image has more, the largest are kept. Keys (N = max_people):

==============  ====================  =======================================
key             shape                 meaning
==============  ====================  =======================================
image           uint8 [h, w, 3]       the warped image
keypoints       float32 [N, K, 3]     x, y on the output grid, visibility
boxes           float32 [N, 4]        person boxes in input pixels
person_valid    bool [N]              which rows are people
mask            uint8 [h/s, w/s]      foreground 0/1; 255 crowd or unknown
part_map        uint8 [h/s, w/s]      part labels, 255 unknown
instance_map    uint8 [h/s, w/s]      0 background, n + 1 for person n,
                                      255 unknown
affine          float32 [2, 3]        image -> output-grid coordinates
gt_keypoints    float32 [N, K, 3]     keypoints in image coordinates
gt_boxes        float32 [N, 4]        boxes in image coordinates
head_boxes      float32 [N, 4]        head boxes in image coordinates
image_id        int32
valid           bool                  False for padding / damaged samples
==============  ====================  =======================================
"""

from __future__ import annotations

import ml_collections
import numpy as np

from hpe_jax.data import augment
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons
from hpe_jax.data import warp as warp_lib
from hpe_jax.ops import affine

_UNKNOWN = skeletons.IGNORE_LABEL


def _unknown(shape):
  return np.full(shape, _UNKNOWN, np.uint8)


def _box_corners(boxes):
  x1, y1, x2, y2 = np.moveaxis(boxes, -1, 0)
  return np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1),
                   np.stack([x1, y2], -1), np.stack([x2, y2], -1)], -2)


class FullImageSample:
  """Builds the sample of image `index` (see the module docstring)."""

  def __init__(self, dataset: example_lib.ImageDataset,
               geometry: warp_lib.Geometry, max_people: int,
               augment_cfg: ml_collections.ConfigDict | None):
    self.dataset = dataset
    self.geometry = geometry
    self.max_people = max_people
    self.augment_cfg = augment_cfg

  def __call__(self, index: int, rng: np.random.Generator | None = None):
    ds = self.dataset
    ex = ds[index]
    people = np.flatnonzero(~ex['is_crowd'])
    sizes = np.prod(ex['boxes'][people, 2:] - ex['boxes'][people, :2], -1)
    people = people[np.argsort(-sizes, kind='stable')][:self.max_people]
    n = len(people)

    whole = example_lib.image_box(ex['height'], ex['width'])
    # Half-body crops need one person; whole images never use them.
    crop = augment.sample_crop(rng, whole, None, None,
                               self.geometry.aspect_ratio, 1.0,
                               self.augment_cfg)
    warp = warp_lib.make_warp(crop, self.geometry)
    image = augment.photometric(
        rng, warp_lib.warp_image(ex['image'], warp, self.geometry),
        self.augment_cfg)

    out = self.placeholder()
    out.update(image=image, affine=warp.to_output.astype(np.float32),
               image_id=np.int32(ex['image_id']), valid=np.bool_(True))
    kp = ex['keypoints'][people]
    out['keypoints'][:n] = warp_lib.warp_keypoints(kp, warp, ds.skeleton)
    out['gt_keypoints'][:n] = kp
    out['gt_boxes'][:n] = ex['boxes'][people]
    out['head_boxes'][:n] = ex['head_boxes'][people]
    out['person_valid'][:n] = True
    corners = affine.apply(warp.to_input, _box_corners(ex['boxes'][people]))
    out['boxes'][:n] = np.concatenate([corners.min(-2), corners.max(-2)], -1)

    if ds.has_masks:
      # Slots run from the largest person to the smallest; where masks
      # overlap the smaller person wins, as it is usually the one in front.
      masks = ex['person_masks'][people[::-1]] > 0
      instance = np.where(masks.any(0), n - masks.argmax(0), 0).astype(
          np.uint8) if n else np.zeros((ex['height'], ex['width']), np.uint8)
      crowd = ex['person_masks'][ex['is_crowd']].any(0) & (instance == 0)
      instance[crowd] = _UNKNOWN
      out['instance_map'] = warp_lib.warp_labels(instance, warp,
                                                 self.geometry)
      out['mask'] = np.where(out['instance_map'] == _UNKNOWN, _UNKNOWN,
                             out['instance_map'] > 0).astype(np.uint8)
    if ds.part_schema is not None:
      out['part_map'] = warp_lib.warp_part_map(ex['part_map'], warp,
                                               self.geometry, ds.part_schema)
    return out

  def placeholder(self):
    """An all-zero sample with valid=False (padding, damaged samples)."""
    h, w = self.geometry.input_size
    oh, ow = self.geometry.output_size
    n, k = self.max_people, self.dataset.num_joints
    return dict(
        image=np.zeros((h, w, 3), np.uint8),
        keypoints=np.zeros((n, k, 3), np.float32),
        boxes=np.zeros((n, 4), np.float32),
        person_valid=np.zeros((n,), bool),
        mask=_unknown((oh, ow)),
        part_map=_unknown((oh, ow)),
        instance_map=_unknown((oh, ow)),
        affine=np.array([[1, 0, 0], [0, 1, 0]], np.float32),
        gt_keypoints=np.zeros((n, k, 3), np.float32),
        gt_boxes=np.zeros((n, 4), np.float32),
        head_boxes=np.full((n, 4), np.nan, np.float32),
        image_id=np.int32(-1),
        valid=np.bool_(False),
    )
