"""Multi-person pose tracking along a video with an exported predictor:
per-frame estimation, identities by association, smoothing of each track.

`PoseTracker.step(image, boxes=None)` estimates the people of one frame and
gives each a track id (`association.Tracker`). Where the people come from
depends on the export (its ``results``):

- top-down keypoint models (``keypoints``) run on person boxes: the given
  boxes of the frame (detections), plus a box around each person of the
  previous frame whose confident joints were propagated into this frame
  (`propagation`), so a person found once is followed without a detector;
  with neither (the first frame, or everyone lost), the whole frame is one
  person. A followed box mostly inside a detection (more than
  `_SAME_BOX_COVER` of its area) gives way to it. Poses that come out
  nearly the same are one person (`coco_keypoints.oks_nms` at OKS
  `_DUPLICATE_OKS`).
- detectors (``people``: part_rcnn) find the people themselves.
- U-Net joint heads (``label_map``) give one person, fully confident.

`smooth_tracks` then smooths each track offline
(`smoothing.smooth_tracks`, the joint scores as confidences, joints at or
below the threshold masked) within the frames where the track was seen.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hpe_jax.data import example
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.video import association
from hpe_jax.video import propagation
from hpe_jax.video import smoothing

# A box around a person's joints misses the head top, hands and feet.
POSE_BOX_SCALE = 1.25
_DUPLICATE_OKS = 0.7
_SAME_BOX_COVER = 0.6


@dataclasses.dataclass
class TrackedFrame:
  """The people of one frame: track ids [N], boxes [N, 4] (x1, y1, x2, y2),
  scores [N], keypoints [N, K, 3] (x, y, score) as estimated, and `smoothed`
  (the same, after `smooth_tracks`)."""
  track_ids: np.ndarray
  boxes: np.ndarray
  scores: np.ndarray
  keypoints: np.ndarray
  smoothed: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.track_ids)


def pose_boxes(keypoints, threshold: float,
               scale: float = POSE_BOX_SCALE) -> tuple[np.ndarray, np.ndarray]:
  """Boxes [N, 4] around the joints of poses [N, K, 3] scoring above
  `threshold`, enlarged `scale` times, and which poses have two such joints
  (the others get an empty box)."""
  kp = np.asarray(keypoints, np.float32).reshape(-1, *np.shape(keypoints)[-2:])
  seen = kp[..., 2] > threshold
  ok = seen.sum(-1) >= 2
  tight = example.boxes_from_keypoints(
      np.concatenate([kp[..., :2], seen[..., None]], -1))
  tight[~ok] = 0
  centre, half = (tight[:, :2] + tight[:, 2:]) / 2, (
      tight[:, 2:] - tight[:, :2]) / 2 * scale
  return np.concatenate([centre - half, centre + half], -1), ok


def _covered(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
  """[N] the largest fraction of each box's area inside one of `others`."""
  lo = np.maximum(boxes[:, None, :2], others[None, :, :2])
  hi = np.minimum(boxes[:, None, 2:], others[None, :, 2:])
  inside = np.prod(np.clip(hi - lo, 0, None), -1)
  area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6), -1)
  return (inside / area[:, None]).max(1)


class PoseTracker:
  """Online estimation and identities, frame by frame (module docstring)."""

  def __init__(self, predictor, *, propagation_method: str = 'orb+dense',
               min_score: float = 0.1, keypoint_threshold: float = 0.2,
               max_age: int = 5, min_similarity: float = 0.3):
    if predictor.results not in ('keypoints', 'people', 'label_map'):
      raise ValueError(f'a {predictor.task} model cannot be tracked (it '
                       'takes people\'s poses, it does not find them)')
    if (predictor.results == 'label_map' and
        not predictor.metadata.get('skeleton')):
      raise ValueError(f'a {predictor.task} model without joint heads has '
                       'no keypoints to track')
    self.predictor = predictor
    self.propagate = propagation.method(propagation_method)
    self.min_score = min_score
    self.keypoint_threshold = keypoint_threshold
    skeleton = predictor.metadata['skeleton']
    self.num_joints = len(skeleton['joint_names'])
    self.sigmas = coco_keypoints.sigmas_or_mean(skeleton.get('oks_sigmas'),
                                                self.num_joints)
    self.tracker = association.Tracker(
        self.sigmas, min_similarity=min_similarity, max_age=max_age,
        min_joint_score=keypoint_threshold)
    self._previous: tuple[np.ndarray, TrackedFrame] | None = None

  def _followed_boxes(self, image: np.ndarray) -> np.ndarray:
    """Boxes around last frame's people, their joints propagated here."""
    if self._previous is None or not len(self._previous[1]):
      return np.zeros((0, 4), np.float32)
    previous, people = self._previous
    kp = people.keypoints.copy()
    seen = kp[..., 2] > self.keypoint_threshold
    if seen.any():
      moved, found = self.propagate(previous, image, kp[seen][:, :2])
      kp[seen] = np.concatenate(
          [moved, np.where(found, kp[seen][:, 2], 0)[:, None]], -1)
    boxes, ok = pose_boxes(kp, self.keypoint_threshold)
    return boxes[ok]

  def _estimate(self, image: np.ndarray, boxes):
    """(boxes [N, 4], scores [N], keypoints [N, K, 3]) of one frame."""
    p = self.predictor
    if p.results == 'keypoints':
      given = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(
          boxes, np.float32).reshape(-1, 4)
      followed = self._followed_boxes(image)
      if len(given) and len(followed):
        # A detection replaces the followed box of the same person: both
        # would give a pose, and near-duplicates split a track.
        followed = followed[_covered(followed, given) <= _SAME_BOX_COVER]
      candidates = np.concatenate([given, followed])
      result = p.predict(image, boxes=candidates if len(candidates) else None)
    else:
      result = p.predict(image)
    if p.results == 'label_map':
      joints = list(result['joints'].values())
      if not joints:
        return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                np.zeros((0, self.num_joints, 3), np.float32))
      kp = np.concatenate([joints[0], np.ones((len(joints[0]), 1))], -1)[None]
      return pose_boxes(kp, 0.0)[0], np.ones(1, np.float32), kp.astype(
          np.float32)
    people = [q for q in result['people'] if q['score'] >= self.min_score]
    if not people:
      return (np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
              np.zeros((0, self.num_joints, 3), np.float32))
    kp = np.stack([np.asarray(q['keypoints'], np.float32) for q in people])
    box = np.stack([np.asarray(q['box'], np.float32) for q in people])
    scores = np.array([q['score'] for q in people], np.float32)
    areas = np.prod(np.maximum(box[:, 2:] - box[:, :2], 1), -1)
    keep = coco_keypoints.oks_nms(kp, scores, areas, self.sigmas,
                                  _DUPLICATE_OKS)
    return box[keep], scores[keep], kp[keep]

  def step(self, image: np.ndarray, boxes=None) -> TrackedFrame:
    """The people of the next frame (RGB uint8), with track ids; `boxes`:
    this frame's detections [N, 4] for a top-down model, if any."""
    box, scores, kp = self._estimate(image, boxes)
    ids = self.tracker.update(kp, box)
    frame = TrackedFrame(np.asarray(ids, np.int64), box, scores, kp)
    self._previous = (image, frame)
    return frame


def smooth_tracks(frames: list[TrackedFrame], threshold: float,
                  model: smoothing.MotionModel = smoothing.MotionModel()
                  ) -> None:
  """Sets each frame's `smoothed` keypoints (module docstring)."""
  xy = smoothing.smooth_tracks(
      [f.track_ids for f in frames], [f.keypoints[..., :2] for f in frames],
      [f.keypoints[..., 2] for f in frames],
      [f.keypoints[..., 2] > threshold for f in frames], model)
  for f, smoothed in zip(frames, xy):
    f.smoothed = np.concatenate([smoothed, f.keypoints[..., 2:]], -1)
