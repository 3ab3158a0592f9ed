"""Person identities across frames: the poses of a frame matched to the
tracks of the frames before by OKS (box IoU where two poses share no
confident joint), with an optimal one-to-one assignment (Hungarian,
`scipy.optimize.linear_sum_assignment`).

`Tracker.update(keypoints, boxes)` gives each pose of a frame a track id:
the id of the track it matches (similarity at least `min_similarity`), or
a new one. A track not seen for more than `max_age` frames is dropped, so a
person who walks out and comes back within `max_age` frames keeps the id.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize

from hpe_jax.data import skeletons
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.evaluation import instance_metrics


def similarity(keypoints, boxes, others, other_boxes, sigmas,
               min_joint_score: float = 0.2) -> np.ndarray:
  """[N, M] similarity of poses [N, K, 3] (x, y, score) with boxes [N, 4]
  to poses [M, K, 3] with boxes [M, 4].

  OKS over the joints confident (score above `min_joint_score`) in both
  poses, scaled by the mean box area; box IoU for pairs sharing no such
  joint.
  """
  keypoints = np.asarray(keypoints, np.float64)
  others = np.asarray(others, np.float64)
  area = lambda b: np.prod(np.maximum(b[:, 2:] - b[:, :2], 1), -1)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  other_boxes = np.asarray(other_boxes, np.float64).reshape(-1, 4)
  terms = coco_keypoints.oks_terms(keypoints, area(boxes), others,
                                   area(other_boxes), sigmas)
  shared = ((keypoints[:, None, :, 2] > min_joint_score) &
            (others[None, :, :, 2] > min_joint_score))
  count = shared.sum(-1)
  oks = (terms * shared).sum(-1) / np.maximum(count, 1)
  return np.where(count > 0, oks,
                  instance_metrics.box_iou(boxes, other_boxes))


def assign(scores: np.ndarray, min_score: float) -> list[tuple[int, int]]:
  """Pairs (row, column) of the one-to-one assignment maximising the total
  of `scores` [N, M], keeping pairs scoring at least `min_score`."""
  if not scores.size:
    return []
  rows, cols = optimize.linear_sum_assignment(scores, maximize=True)
  return [(int(r), int(c)) for r, c in zip(rows, cols)
          if scores[r, c] >= min_score]


@dataclasses.dataclass
class _Track:
  track_id: int
  keypoints: np.ndarray
  box: np.ndarray
  last_seen: int


class Tracker:
  """Online track ids for the poses of consecutive frames (module
  docstring)."""

  def __init__(self, sigmas=None, min_similarity: float = 0.3,
               max_age: int = 5, min_joint_score: float = 0.2):
    self.sigmas = np.asarray(sigmas if sigmas is not None else
                             skeletons.COCO17.oks_sigmas)
    self.min_similarity = min_similarity
    self.max_age = max_age
    self.min_joint_score = min_joint_score
    self.tracks: list[_Track] = []
    self.frame = -1
    self._next_id = 0

  def update(self, keypoints, boxes) -> list[int]:
    """Track ids of one frame's poses [N, K, 3] with boxes [N, 4]."""
    self.frame += 1
    keypoints = np.asarray(keypoints, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    self.tracks = [t for t in self.tracks
                   if self.frame - t.last_seen <= self.max_age]
    ids = [-1] * len(boxes)
    if self.tracks and len(boxes):
      scores = similarity(
          np.stack([t.keypoints for t in self.tracks]),
          np.stack([t.box for t in self.tracks]), keypoints, boxes,
          self.sigmas, self.min_joint_score)
      for row, col in assign(scores, self.min_similarity):
        track = self.tracks[row]
        track.keypoints, track.box, track.last_seen = (
            keypoints[col], boxes[col], self.frame)
        ids[col] = track.track_id
    for col, track_id in enumerate(ids):
      if track_id < 0:
        ids[col] = self._next_id
        self.tracks.append(_Track(self._next_id, keypoints[col], boxes[col],
                                  self.frame))
        self._next_id += 1
    return ids
