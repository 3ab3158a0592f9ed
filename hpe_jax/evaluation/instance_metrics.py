"""COCO instance metrics of detected people, plus part IoU of matched people.

A top-down multi-person model detects people and predicts, per detection, a
box, a mask and keypoints. `hpe_jax.data.coco.instance_results` turns those
into standard COCO results, and pycocotools' ``COCOeval`` scores them
against the ground truth of `hpe_jax.data.coco.coco_ground_truth`:

* boxes and masks with `evaluate_instances` (``iou_type`` ``'bbox'`` or
  ``'segm'``), giving the 12 COCO detection metrics ``box_ap`` ..
  ``box_ar_large`` / ``mask_ap`` .. ``mask_ar_large``;
* keypoints, of the detected people, with `coco_keypoints.evaluate_keypoints`
  on the same results (OKS AP, ``..._detbox`` protocol).

Body parts are scored per person with `MatchedPartIoU`: detections are
matched to ground-truth people by box IoU and each matched pair's part labels
are compared inside the union of the two people's masks, pooled over the
split (``part_iou_matched/<part>``, ``part_miou_matched``). How many people
were matched at all (``matched_fraction``) is reported next to it, since
the part IoU says nothing about people who were missed.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np
from pycocotools import coco as coco_api
from pycocotools import cocoeval

from hpe_jax.data import coco
from hpe_jax.data import skeletons
from hpe_jax.evaluation import segmentation_metrics

# Names of COCOeval.stats for boxes and masks, in its order, without the
# 'box_' / 'mask_' prefix.
STAT_NAMES = ('ap', 'ap50', 'ap75', 'ap_small', 'ap_medium', 'ap_large',
              'ar1', 'ar10', 'ar100', 'ar_small', 'ar_medium', 'ar_large')

# COCOeval iouType -> (metric-name prefix, result key it reads).
_IOU_TYPES = {'bbox': ('box_', 'bbox'), 'segm': ('mask_', 'segmentation')}

# Result keys handed to loadRes per iouType. loadRes picks how to complete a
# result by the first key it finds among 'bbox', 'segmentation' and
# 'keypoints' (in that order), so a mask result that still had its 'bbox'
# would get the box area instead of the mask area, which decides its COCO
# size range.
_KEPT_KEYS = {'bbox': ('image_id', 'category_id', 'score', 'bbox'),
              'segm': ('image_id', 'category_id', 'score', 'segmentation'),
              'keypoints': ('image_id', 'category_id', 'score', 'keypoints')}


def scored_copies(results: list[dict[str, Any]],
                  iou_type: str) -> list[dict[str, Any]]:
  """Copies of `results` with only the keys COCOeval's `iou_type`
  ('bbox', 'segm' or 'keypoints') reads, so loadRes completes them as
  that type."""
  return [{k: r[k] for k in _KEPT_KEYS[iou_type]} for r in results]


def metric_names(iou_type: str, protocol_suffix: str = '') -> list[str]:
  """The names `evaluate_instances` gives its metrics, e.g. ``box_ap50``."""
  if iou_type not in _IOU_TYPES:
    raise ValueError(f'iou_type must be one of {sorted(_IOU_TYPES)}: '
                     f'{iou_type!r}')
  prefix = _IOU_TYPES[iou_type][0]
  return [prefix + n + protocol_suffix for n in STAT_NAMES]


def evaluate_instances(coco_gt: coco_api.COCO | str | os.PathLike,
                       results: list[dict[str, Any]] | str | os.PathLike,
                       iou_type: str, protocol_suffix: str = '', *,
                       verbose: bool = False) -> dict[str, float]:
  """COCO box or mask AP/AR of person results.

  Args:
    coco_gt: a pycocotools ``COCO`` (`coco_ground_truth`) or the path of its
      annotation file.
    results: `instance_results` or the path of a JSON file of them.
    iou_type: ``'bbox'`` (boxes) or ``'segm'`` (masks).
    protocol_suffix: appended to every metric name.
    verbose: let pycocotools print its progress and summary table.

  Returns:
    The 12 COCO detection metrics in [0, 1] (-1 where COCO has no ground
    truth of a size range), named as in `metric_names`. No results at all
    score 0 everywhere.

  Raises:
    ValueError: unknown `iou_type`, or a result lacks the key it scores.
  """
  names = metric_names(iou_type, protocol_suffix)
  key = _IOU_TYPES[iou_type][1]
  if isinstance(results, (str, os.PathLike)):
    with open(results, encoding='utf-8') as f:
      results = json.load(f)
  for r in results:
    if key not in r:
      raise ValueError(f'a result of image {r.get("image_id")} has no '
                       f'{key!r}, which iou_type {iou_type!r} scores')
  if not results:
    # pycocotools' loadRes cannot build an empty results set.
    return dict.fromkeys(names, 0.0)
  # loadRes also adds 'area', 'bbox' and 'id' to the dicts it is given.
  kept = scored_copies(results, iou_type)
  with coco.quiet(verbose):
    if not isinstance(coco_gt, coco_api.COCO):
      coco_gt = coco_api.COCO(os.fspath(coco_gt))
    coco_dt = coco_gt.loadRes(kept)
    evaluator = cocoeval.COCOeval(coco_gt, coco_dt, iouType=iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return {n: float(v) for n, v in zip(names, evaluator.stats)}


def _box_area(boxes: np.ndarray) -> np.ndarray:
  """[N] areas of [N, 4] x1, y1, x2, y2 boxes, 0 for inverted ones."""
  return (np.maximum(boxes[:, 2] - boxes[:, 0], 0) *
          np.maximum(boxes[:, 3] - boxes[:, 1], 0))


def box_iou(a, b) -> np.ndarray:
  """[N, M] IoU of x1, y1, x2, y2 boxes (continuous coordinates).

  Boxes without area have IoU 0 with everything, themselves included.
  """
  a = np.asarray(a, np.float64).reshape(-1, 4)
  b = np.asarray(b, np.float64).reshape(-1, 4)
  lo = np.maximum(a[:, None, :2], b[None, :, :2])
  hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.maximum(hi - lo, 0), -1)
  union = _box_area(a)[:, None] + _box_area(b)[None] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_detections(pred_boxes, pred_scores, gt_boxes,
                     iou_threshold: float = 0.5) -> list[tuple[int, int]]:
  """Greedy one-to-one matching of detections to ground-truth people.

  In descending score order (ties in index order) each detection takes the
  still unmatched person it overlaps most, if their box IoU reaches
  `iou_threshold`.

  Args:
    pred_boxes: [D, 4] detected boxes, x1, y1, x2, y2.
    pred_scores: [D] detection scores.
    gt_boxes: [N, 4] ground-truth boxes.
    iou_threshold: least box IoU of a match.

  Returns:
    ``(d, n)`` index pairs, in matching order.
  """
  iou = box_iou(pred_boxes, gt_boxes)
  taken = np.zeros(iou.shape[1], bool)
  pairs = []
  for d in np.argsort(-np.asarray(pred_scores, np.float64), kind='stable'):
    if taken.all():
      break
    overlap = np.where(taken, -1.0, iou[d])
    n = int(np.argmax(overlap))
    if overlap[n] >= iou_threshold:
      taken[n] = True
      pairs.append((int(d), n))
  return pairs


class MatchedPartIoU:
  """Per-part IoU of detected people matched to ground-truth people.

  Fed one image at a time (`add`). Detections are matched to people with
  `match_detections`; for each matched pair, every pixel of either person's
  mask is scored: the predicted label is the detection's part label on its
  own pixels and background elsewhere, the true label the person's part on
  the person's pixels and background elsewhere (including other people's
  pixels). Unknown pixels (`skeletons.IGNORE_LABEL` in the instance map, or
  a pixel of the person without a part label) are not scored. Unmatched
  detections and people add no pixels; `matched_fraction` counts them.

  Metrics of `compute`:

  * ``part_iou_matched/<part>``: IoU of each part pooled over all matched
    pairs; NaN for a part that occurs in neither truth nor prediction.
  * ``part_miou_matched``: mean of those over the parts that occur.
    Background is left out, unlike `SegmentationMetrics`' ``part_miou``:
    here it only means "outside this person" within the two masks, not
    the scene background, and its IoU would mostly measure mask agreement.
  * ``matched_people``, ``gt_people``: how many valid ground-truth people
    were matched, and seen; ``matched_fraction`` their ratio.

  With nothing scored the IoUs are NaN (and the counts 0).
  """

  def __init__(self, class_names: Sequence[str], iou_threshold: float = 0.5):
    """Starts empty.

    Args:
      class_names: names of the part labels, 'background' (0) first, e.g.
        ``skeletons.BODY_PARTS6.label_names``.
      iou_threshold: least box IoU of a detection and a person to match.
    """
    if len(class_names) < 2:
      raise ValueError(f'need background and at least one part: '
                       f'{class_names!r}')
    self.class_names = tuple(class_names)
    self.num_classes = len(self.class_names)
    self.iou_threshold = float(iou_threshold)
    self.confusion = np.zeros((self.num_classes,) * 2, np.int64)
    self.matched_people = 0
    self.gt_people = 0

  def add(self, pred_boxes, pred_scores, pred_valid, pred_instances,
          pred_parts, gt_boxes, gt_valid, gt_instances, gt_parts) -> None:
    """Adds one image; all pixel maps and boxes share its pixel frame.

    Args:
      pred_boxes: [D, 4] detected boxes, x1, y1, x2, y2.
      pred_scores: [D] detection scores.
      pred_valid: [D] bool, False for padding detections (ignored).
      pred_instances: [H, W] int, 0 for no detection, ``d + 1`` for pixels
        of detection ``d``.
      pred_parts: [H, W] int predicted part labels in [0, C).
      gt_boxes: [N, 4] ground-truth person boxes.
      gt_valid: [N] bool, False for padding rows and for people not to
        score (e.g. crowd regions).
      gt_instances: [H, W] int, 0 background, ``n + 1`` for person ``n``,
        `skeletons.IGNORE_LABEL` unknown.
      gt_parts: [H, W] int part labels, `skeletons.IGNORE_LABEL` unknown.
    """
    pred_instances = np.asarray(pred_instances)
    pred_parts = np.asarray(pred_parts)
    gt_instances = np.asarray(gt_instances)
    gt_parts = np.asarray(gt_parts)
    shapes = {a.shape for a in (pred_instances, pred_parts, gt_instances,
                                gt_parts)}
    if len(shapes) != 1 or len(pred_instances.shape) != 2:
      raise ValueError(f'expected [H, W] maps of one size, got {shapes}')
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    pred_valid = np.asarray(pred_valid, bool).reshape(-1)
    gt_valid = np.asarray(gt_valid, bool).reshape(-1)
    pred_scores = np.asarray(pred_scores, np.float64).reshape(-1)
    if not len(pred_boxes) == len(pred_scores) == len(pred_valid):
      raise ValueError(f'{len(pred_boxes)} detected boxes, '
                       f'{len(pred_scores)} scores, {len(pred_valid)} flags')
    if len(gt_boxes) != len(gt_valid):
      raise ValueError(f'{len(gt_boxes)} people, {len(gt_valid)} flags')

    pred_index = np.flatnonzero(pred_valid)
    gt_index = np.flatnonzero(gt_valid)
    self.gt_people += len(gt_index)
    pairs = match_detections(pred_boxes[pred_index], pred_scores[pred_index],
                             gt_boxes[gt_index], self.iou_threshold)
    self.matched_people += len(pairs)

    ignore = skeletons.IGNORE_LABEL
    known = gt_instances != ignore
    for d, n in pairs:
      pred_mask = pred_instances == pred_index[d] + 1
      gt_mask = gt_instances == gt_index[n] + 1
      scored = ((pred_mask | gt_mask) & known &
                ~(gt_mask & (gt_parts == ignore)))
      pred_label = np.where(pred_mask, pred_parts, 0)[scored]
      gt_label = np.where(gt_mask, gt_parts, 0)[scored]
      self.confusion += segmentation_metrics.confusion_matrix(
          pred_label, gt_label, self.num_classes)

  def compute(self) -> dict[str, float]:
    """The metrics of the class docstring over everything added so far."""
    cm = self.confusion
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    occurs = union > 0
    iou = np.where(occurs, tp / np.where(occurs, union, 1), np.nan)[1:]
    metrics = {f'part_iou_matched/{name}': float(v)
               for name, v in zip(self.class_names[1:], iou)}
    metrics['part_miou_matched'] = (
        float(np.nanmean(iou)) if occurs[1:].any() else float('nan'))
    metrics['matched_people'] = float(self.matched_people)
    metrics['gt_people'] = float(self.gt_people)
    metrics['matched_fraction'] = (
        self.matched_people / self.gt_people if self.gt_people else
        float('nan'))
    return metrics
