"""Multi-person keypoint tracking metrics in PoseTrack's convention: MOTA,
precision, recall and identity switches per joint type, and their means.

Per frame, a predicted joint (score above `min_score`) matches a labelled
joint of the same type if it lies within `threshold` × the person's head
size (PCKh 0.5). People are paired one-to-one per frame, maximising the
number of matching joints (Hungarian assignment). For each joint type
then: a paired, matching joint is a true positive; a labelled joint
without one is a miss (FN); a predicted joint without one a false
positive; and a labelled track's joint matched to another predicted track
than the last time it was matched is an identity switch. MOTA = 1 − (FN +
FP + switches) / labelled joints.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize


@dataclasses.dataclass
class FramePeople:
  """The people of one frame: track ids [N], keypoints [N, K, 3] (x, y,
  visibility or score) and, for labelled people, head sizes [N]."""
  track_ids: np.ndarray
  keypoints: np.ndarray
  head_sizes: np.ndarray | None = None


def _frame_matches(gt: FramePeople, pred: FramePeople, threshold: float,
                   min_score: float):
  """(pairs [(g, p)], matching joints [G, P, K], labelled [G, K],
  predicted [P, K])."""
  labelled = gt.keypoints[..., 2] > 0
  predicted = pred.keypoints[..., 2] > min_score
  dist = np.linalg.norm(gt.keypoints[:, None, :, :2] -
                        pred.keypoints[None, :, :, :2], axis=-1)
  close = dist <= threshold * np.asarray(gt.head_sizes)[:, None, None]
  matching = close & labelled[:, None] & predicted[None]
  pairs = []
  if matching.size:
    rows, cols = optimize.linear_sum_assignment(matching.sum(-1),
                                                maximize=True)
    pairs = [(g, p) for g, p in zip(rows, cols) if matching[g, p].any()]
  return pairs, matching, labelled, predicted


def _mean(values: np.ndarray) -> float:
  """Mean over the joint types where the figure is defined (NaN if none:
  e.g. precision with nothing predicted)."""
  defined = values[np.isfinite(values)]
  return float(defined.mean()) if defined.size else float('nan')


def keypoint_tracking_metrics(ground_truth: list[FramePeople],
                              predictions: list[FramePeople], *,
                              threshold: float = 0.5,
                              min_score: float = 0.0) -> dict[str, float]:
  """MOTA, precision, recall (per joint type and their mean) and identity
  switches (total) of predicted tracks against labelled ones, frame by
  frame (module docstring).

  Returns:
    {'mota', 'precision', 'recall', 'id_switches', 'mota/<k>', ...}.
  """
  if len(ground_truth) != len(predictions):
    raise ValueError(f'{len(ground_truth)} labelled frames but '
                     f'{len(predictions)} predicted')
  num_joints = next((f.keypoints.shape[1] for f in ground_truth + predictions
                     if len(f.keypoints)), 0)
  tp, fn, fp, switches, labelled_total = (np.zeros(num_joints)
                                          for _ in range(5))
  last_match: dict[tuple[int, int], int] = {}  # (gt track, joint) -> pred
  for gt, pred in zip(ground_truth, predictions):
    pairs, matching, labelled, predicted = _frame_matches(
        gt, pred, threshold, min_score)
    hit_gt = np.zeros_like(labelled)
    hit_pred = np.zeros_like(predicted)
    for g, p in pairs:
      hits = matching[g, p]
      hit_gt[g] |= hits
      hit_pred[p] |= hits
      for k in np.flatnonzero(hits):
        key = (int(gt.track_ids[g]), int(k))
        previous = last_match.get(key)
        if previous is not None and previous != int(pred.track_ids[p]):
          switches[k] += 1
        last_match[key] = int(pred.track_ids[p])
    tp += hit_gt.sum(0)
    fn += (labelled & ~hit_gt).sum(0)
    fp += (predicted & ~hit_pred).sum(0)
    labelled_total += labelled.sum(0)
  with np.errstate(invalid='ignore', divide='ignore'):
    mota = 1 - (fn + fp + switches) / labelled_total
    precision = tp / (tp + fp)
    recall = tp / labelled_total
  out = {'mota': _mean(mota), 'precision': _mean(precision),
         'recall': _mean(recall),
         'id_switches': float(switches.sum())}
  for k in range(num_joints):
    out[f'mota/{k}'] = float(mota[k])
  return out
