"""Building COCO-format ground truth dicts from examples.

The synthetic-people exporter writes its annotation file with these helpers,
and instance evaluation builds an in-memory pycocotools ground truth from any
dataset with person masks the same way, so both agree with what
`CocoKeypoints` reads back: ``bbox`` as x, y, w, h from the example's x1, y1,
x2, y2 boxes, masks as compressed RLE and keypoints in the examples'
pixel-index coordinates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from hpe_jax.data import coco
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons


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
  return [dict(id=coco.PERSON_CATEGORY_ID, name='person',
               supercategory='person', keypoints=names, skeleton=limbs)]


def coco_image_entry(ex: example_lib.Example, file_name: str) -> dict[str, Any]:
  """The COCO ``images`` entry of one example."""
  return dict(id=int(ex['image_id']), file_name=file_name,
              height=int(ex['height']), width=int(ex['width']))


def coco_annotation_entries(ex: example_lib.Example,
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
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x1, y1, x2, y2 = (float(v) for v in ex['boxes'][p])
    kp = np.zeros_like(keypoints[p]) if crowd[p] else keypoints[p]
    flat = []
    for x, y, v in kp:
      # Visibility as an int, as COCO files write it.
      flat += [float(x), float(y), int(v)]
    entries.append(dict(
        id=first_id + p, image_id=int(ex['image_id']),
        category_id=coco.PERSON_CATEGORY_ID, keypoints=flat,
        num_keypoints=int((kp[:, 2] > 0).sum()),
        bbox=[x1, y1, x2 - x1, y2 - y1], area=int(mask.sum()),
        segmentation=dict(size=[int(s) for s in rle['size']],
                          counts=rle['counts'].decode('ascii')),
        iscrowd=int(crowd[p])))
  return entries
