"""COCO keypoint evaluation: OKS AP/AR and OKS-NMS.

Predictions, as COCO results (`hpe_jax.data.coco.keypoint_results`), are
scored by pycocotools' ``COCOeval`` with OKS
(`evaluate_keypoints`). Metric names carry the protocol they were measured
under (`protocol_suffix_for`): ``oks_ap_gtbox`` (people cropped from
ground-truth boxes) is not comparable to ``oks_ap_detbox_flip`` (detected
boxes, flip test).

`oks_nms` removes duplicate poses, e.g. of overlapping detected boxes, before
top-down evaluation.
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

# Names of COCOeval.stats for keypoints, in its order.
METRIC_NAMES = ('oks_ap', 'oks_ap50', 'oks_ap75', 'oks_ap_medium',
                'oks_ap_large', 'oks_ar', 'oks_ar50', 'oks_ar75',
                'oks_ar_medium', 'oks_ar_large')

_BOX_SOURCES = {'gt': '_gtbox', 'detected': '_detbox'}


def protocol_suffix_for(boxes: str, flip: bool) -> str:
  """Metric-name suffix of a top-down protocol, e.g. ``'_detbox_flip'``.

  Args:
    boxes: ``'gt'`` for ground-truth person boxes, ``'detected'`` for a
      person detector's boxes.
    flip: whether heatmaps were averaged with those of the mirrored input.
  """
  if boxes not in _BOX_SOURCES:
    raise ValueError(f'boxes must be one of {sorted(_BOX_SOURCES)}: {boxes!r}')
  return _BOX_SOURCES[boxes] + ('_flip' if flip else '')


def evaluate_keypoints(coco_gt: coco_api.COCO | str | os.PathLike,
                       results: list[dict[str, Any]] | str | os.PathLike,
                       protocol_suffix: str = '', *,
                       sigmas: Sequence[float] | None = None,
                       verbose: bool = False) -> dict[str, float]:
  """OKS AP/AR of keypoint results against COCO ground truth.

  Args:
    coco_gt: a pycocotools ``COCO`` or the path of its annotation file.
    results: COCO keypoint results (`keypoint_results`) or the path of a
      results file (`write_results`).
    protocol_suffix: appended to every metric name, see `protocol_suffix_for`.
    sigmas: per-joint OKS sigmas; default COCO's 17 (pass the skeleton's for
      other keypoint sets).
    verbose: let pycocotools print its progress and summary table.

  Returns:
    The ten COCO keypoint metrics in [0, 1], named as in `METRIC_NAMES` plus
    the suffix, e.g. ``{'oks_ap_gtbox': .., 'oks_ar_large_gtbox': ..}``.
    No results at all score 0 everywhere.
  """
  if isinstance(results, (str, os.PathLike)):
    with open(results, encoding='utf-8') as f:
      results = json.load(f)
  names = [n + protocol_suffix for n in METRIC_NAMES]
  if not results:
    # pycocotools' loadRes cannot build an empty results set.
    return dict.fromkeys(names, 0.0)
  with coco.quiet(verbose):
    if not isinstance(coco_gt, coco_api.COCO):
      coco_gt = coco_api.COCO(os.fspath(coco_gt))
    # loadRes adds 'area', 'bbox' and 'id' to each dict it is given.
    coco_dt = coco_gt.loadRes([dict(r) for r in results])
    evaluator = cocoeval.COCOeval(coco_gt, coco_dt, iouType='keypoints')
    if sigmas is not None:
      evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return {n: float(v) for n, v in zip(names, evaluator.stats)}


def oks_matrix(keypoints, areas, sigmas) -> np.ndarray:
  """[N, N] object keypoint similarity between all pairs of poses.

  As in OKS-NMS (not COCOeval, which scores against labelled ground-truth
  joints with the ground-truth area): every joint counts and the scale is
  the pair's mean area.

  Args:
    keypoints: [N, K, 2+] poses (x, y first).
    areas: [N] person areas in pixels^2.
    sigmas: [K] per-joint OKS sigmas.
  """
  return oks_terms(keypoints, areas, keypoints, areas, sigmas).mean(-1)


def sigmas_or_mean(sigmas, num_joints: int) -> np.ndarray:
  """A skeleton's OKS sigmas [K]; for a skeleton without them (LSP, MPII,
  your own), COCO's mean sigma for every joint: OKS needs some per-joint
  scale."""
  if sigmas is None:
    sigmas = [np.mean(skeletons.COCO17.oks_sigmas)] * num_joints
  return np.asarray(sigmas, np.float64)


def oks_terms(keypoints, areas, others, other_areas, sigmas) -> np.ndarray:
  """[N, M, K] per-joint OKS terms between poses [N, K, 2+] and [M, K, 2+]
  (areas [N] and [M]); the scale of a pair is its mean area."""
  xy = np.asarray(keypoints, np.float64)[..., :2]
  other_xy = np.asarray(others, np.float64)[..., :2]
  variances = (2 * np.asarray(sigmas, np.float64)) ** 2
  sq_dist = ((xy[:, None] - other_xy[None]) ** 2).sum(-1)  # [N, M, K]
  scale = (np.asarray(areas, np.float64)[:, None] +
           np.asarray(other_areas, np.float64)[None]) / 2 + np.spacing(1)
  return np.exp(-sq_dist / variances / scale[..., None] / 2)


def oks_nms(keypoints, scores, areas, sigmas, threshold: float) -> np.ndarray:
  """Greedy non-maximum suppression of poses by OKS.

  Args:
    keypoints: [N, K, 2+] poses of one image (x, y first).
    scores: [N] pose scores.
    areas: [N] person areas in pixels^2 (e.g. box areas).
    sigmas: [K] per-joint OKS sigmas.
    threshold: a pose is dropped if its OKS with a kept, higher-scoring pose
      exceeds this.

  Returns:
    Indices of the kept poses, highest score first.
  """
  scores = np.asarray(scores, np.float64)
  if scores.size == 0:
    return np.zeros([0], np.int64)
  oks = oks_matrix(keypoints, areas, sigmas)
  order = np.argsort(-scores, kind='stable')
  keep = []
  while order.size:
    best, rest = order[0], order[1:]
    keep.append(best)
    order = rest[oks[best, rest] <= threshold]
  return np.asarray(keep, np.int64)
