"""PCK-family keypoint metrics: PCK, PCKh, AUC of PCK and end-point error.

A predicted joint is correct under PCK@alpha when its distance to the ground
truth is at most ``alpha * normalizer`` of its person. The normaliser names
the protocol:

* ``torso``: distance between the skeleton's torso joints (LSP: left shoulder
  to right hip), `torso_size`;
* ``bbox``: the longer side of the person box (mmpose's ``'bbox'``),
  `bbox_size`;
* ``head``: PCKh, 0.6 x the head-box diagonal (MPII's ``SC_BIAS``),
  `head_size`.

A joint counts only where it is labelled (``visible``) and its person has a
finite, positive normaliser; everything else is excluded, never scored as a
miss. Means are over all counted joints pooled together (not a mean of the
per-joint accuracies), which is the MPII "PCKh total" convention except that
MPII's official total also leaves out pelvis and thorax: pass them as not
visible to reproduce it.

All functions are vectorised numpy over ``[N, K]`` people x joints.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from hpe_jax.data import skeletons

_HEAD_SIZE_FACTOR = 0.6  # MPII's SC_BIAS.


@dataclasses.dataclass(frozen=True)
class PckResult:
  """PCK at one threshold.

  Attributes:
    per_joint: [K] accuracy per joint, NaN for joints never counted.
    per_joint_count: [K] how many joints were counted per joint index.
    mean: accuracy over all counted joints (NaN if none).
    count: number of counted joints.
  """
  per_joint: np.ndarray
  per_joint_count: np.ndarray
  mean: float
  count: int


def _distances(pred, gt):
  """[N, K] Euclidean distances; NaN predictions give NaN (never correct)."""
  return np.linalg.norm(np.asarray(pred, np.float64)
                        - np.asarray(gt, np.float64), axis=-1)


def _normalized_distances(pred, gt, visible, normalizer):
  """[N, K] distances / normaliser, and the [N, K] mask of counted joints."""
  normalizer = np.asarray(normalizer, np.float64)
  person_ok = np.isfinite(normalizer) & (normalizer > 0)
  valid = (np.asarray(visible, bool) & person_ok[:, None]
           & np.isfinite(gt).all(-1))
  safe_norm = np.where(person_ok, normalizer, 1.0)[:, None]
  return _distances(pred, gt) / safe_norm, valid


def pck_accuracy(pred, gt, visible, normalizer, alpha: float) -> PckResult:
  """PCK@alpha.

  Args:
    pred: [N, K, 2] predicted (x, y).
    gt: [N, K, 2] ground-truth (x, y).
    visible: [N, K] bool, joints that are labelled and should be scored.
    normalizer: [N] per-person size in pixels (see module docstring); NaN
      or <= 0 excludes the person.
    alpha: threshold as a fraction of the normaliser.

  Returns:
    A `PckResult`.
  """
  dist, valid = _normalized_distances(pred, gt, visible, normalizer)
  correct = (dist <= alpha) & valid
  per_joint_count = valid.sum(0)
  with np.errstate(invalid='ignore', divide='ignore'):
    per_joint = correct.sum(0) / per_joint_count
  count = int(valid.sum())
  mean = float(correct.sum() / count) if count else float('nan')
  return PckResult(per_joint=per_joint, per_joint_count=per_joint_count,
                   mean=mean, count=count)


def pck_auc(pred, gt, visible, normalizer, alpha_max: float) -> float:
  """Area under the PCK(alpha) curve for alpha in [0, alpha_max], in [0, 1].

  Computed exactly rather than on a threshold grid: a joint at normalised
  distance d is correct for alpha in [d, alpha_max], so its share of the
  area is ``max(0, 1 - d / alpha_max)``.
  """
  dist, valid = _normalized_distances(pred, gt, visible, normalizer)
  if not valid.any():
    return float('nan')
  share = np.clip(1 - dist[valid] / alpha_max, 0, 1)
  return float(np.nan_to_num(share, nan=0.0).mean())


def end_point_error(pred, gt, visible) -> float:
  """Mean pixel distance over labelled joints (NaN if there are none)."""
  valid = np.asarray(visible, bool) & np.isfinite(gt).all(-1)
  if not valid.any():
    return float('nan')
  return float(_distances(pred, gt)[valid].mean())


def torso_size(gt_keypoints, skeleton: skeletons.Skeleton) -> np.ndarray:
  """[N] distance between the skeleton's torso joints, NaN if either unlabelled.

  Args:
    gt_keypoints: [N, K, 3] x, y, visibility (0 = unlabelled).
    skeleton: a skeleton with ``torso`` joints.
  """
  if skeleton.torso_indices is None:
    raise ValueError(f'{skeleton.name} defines no torso joints')
  return _joint_distance(gt_keypoints, skeleton.torso_indices)


def head_size_from_joints(gt_keypoints,
                          skeleton: skeletons.Skeleton) -> np.ndarray:
  """[N] PCKh normaliser for data without head boxes: the distance between
  the skeleton's ``head`` joints (the head segment that MPII's 0.6 x box
  diagonal stands for), NaN if either is unlabelled."""
  if skeleton.head_indices is None:
    raise ValueError(f'{skeleton.name} defines no head joints')
  return _joint_distance(gt_keypoints, skeleton.head_indices)


def _joint_distance(gt_keypoints, joints: tuple[int, int]) -> np.ndarray:
  kp = np.asarray(gt_keypoints, np.float64)
  a, b = joints
  size = np.linalg.norm(kp[:, a, :2] - kp[:, b, :2], axis=-1)
  labelled = (kp[:, a, 2] > 0) & (kp[:, b, 2] > 0)
  return np.where(labelled, size, np.nan)


def bbox_size(boxes) -> np.ndarray:
  """[N] longer side of [N, 4] (x1, y1, x2, y2) boxes."""
  boxes = np.asarray(boxes, np.float64)
  return np.max(boxes[:, 2:] - boxes[:, :2], axis=-1)


def head_size(head_boxes) -> np.ndarray:
  """[N] PCKh normaliser: 0.6 x the diagonal of [N, 4] (x1, y1, x2, y2) boxes."""
  head_boxes = np.asarray(head_boxes, np.float64)
  return _HEAD_SIZE_FACTOR * np.linalg.norm(
      head_boxes[:, 2:] - head_boxes[:, :2], axis=-1)


def metric_name(alpha: float, normalizer: str) -> str:
  """Protocol name: ``'pckh@0.5'`` for head sizes, else ``'pck@0.2_torso'``."""
  if normalizer == 'head':
    return f'pckh@{alpha:g}'
  return f'pck@{alpha:g}_{normalizer}'


def pck_metrics(pred, gt, visible, normalizer, *, alpha: float,
                normalizer_name: str,
                joint_names: Sequence[str] | None = None,
                auc_alpha_max: float | None = None) -> dict[str, float]:
  """Named PCK metrics of one protocol.

  Args:
    pred, gt, visible, normalizer: as in `pck_accuracy`.
    alpha: PCK threshold.
    normalizer_name: ``'torso'``, ``'bbox'``, ``'head'`` (PCKh) or another
      name for the protocol.
    joint_names: [K] names; adds ``'<metric>/<joint>'`` per-joint entries.
    auc_alpha_max: adds ``'pck_auc@<alpha_max>_<normalizer>'`` when set.

  Returns:
    E.g. ``{'pck@0.2_torso': .., 'pck@0.2_torso/right_ankle': ..,
    'epe': ..}``; ``'epe'`` is the mean end-point error in pixels.
  """
  name = metric_name(alpha, normalizer_name)
  result = pck_accuracy(pred, gt, visible, normalizer, alpha)
  metrics = {name: result.mean}
  if joint_names is not None:
    if len(joint_names) != len(result.per_joint):
      raise ValueError(f'{len(joint_names)} joint names for '
                       f'{len(result.per_joint)} joints')
    metrics.update({f'{name}/{j}': float(v)
                    for j, v in zip(joint_names, result.per_joint)})
  if auc_alpha_max is not None:
    metrics[f'pck_auc@{auc_alpha_max:g}_{normalizer_name}'] = pck_auc(
        pred, gt, visible, normalizer, auc_alpha_max)
  metrics['epe'] = end_point_error(pred, gt, visible)
  return metrics
