"""Annotation propagation: keypoints labelled on some frames of a video
carried to the frames between them, and the frames where a model disagrees
flagged for a person to review.

Key frames come from a COCO or PoseTrack JSON file (`read_key_frames`):
``images`` (``id``, ``file_name``, PoseTrack's ``frame_id``) and
``annotations`` (``image_id``, ``keypoints`` in pixel-index coordinates as
the project's COCO reader takes them, PoseTrack's ``track_id``). Images are
matched to the frames by file name for a folder of frames, else by
``frame_id`` (or, without it, the image id) as the frame number; PoseTrack
2018's 11-digit ids (1, the video number, the frame number in 4 digits)
give their last four digits.

`propagate` follows every annotated person forwards from each key frame
(`propagation` methods) until the next. A person of the next key frame
continues the track of the same ``track_id`` or, without ids, of the
propagated pose it matches best (OKS, Hungarian). With smoothing, each
track is smoothed offline with the key frames as near-exact measurements
(`_KEY_FRAME_CONFIDENCE`) and the propagated joints as ordinary ones, so
that the next key frame pulls the propagated path towards itself instead
of the error piling up to a jump there.

`agreement` compares a frame's propagated poses with a model's estimates
for the same people: OKS per person; a person is flagged for review where
it is below `min_agreement`, or where propagation lost a labelled joint.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from hpe_jax.data import example
from hpe_jax.video import association
from hpe_jax.video import propagation
from hpe_jax.video import smoothing
from hpe_jax.video import tracking

# A key frame's joints count as measurements this many times as certain as
# a propagated one's.
_KEY_FRAME_CONFIDENCE = 100.0
_MIN_MATCH_OKS = 0.1
_POSETRACK_ID = 10**10
_POSETRACK_FRAMES = 10**4


@dataclasses.dataclass
class KeyFrame:
  """The labelled people of one frame: keypoints [N, K, 3] (x, y,
  visibility) and track ids [N] (-1 where the file gives none)."""
  keypoints: np.ndarray
  track_ids: np.ndarray


def read_key_frames(path: str, num_joints: int | None, names=None
                    ) -> dict[int, KeyFrame]:
  """{frame position: `KeyFrame`} of a COCO or PoseTrack file (module
  docstring); `names` are the frames' file names (a folder of frames);
  `num_joints` None: as many as the file's first person has.

  Raises:
    example.DatasetError: in one line, naming the file, when it is not such
      a file, has people with another joint count, or names no frame.
  """
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise example.DatasetError(f'{path}: no such annotation file') from None
  except (OSError, ValueError) as e:
    raise example.DatasetError(f'{path}: not a JSON file ({e})') from None
  if not isinstance(data, dict) or not isinstance(data.get('images'), list):
    raise example.DatasetError(f'{path}: expected COCO or PoseTrack '
                               'annotations (an object with "images")')
  by_name = {n: i for i, n in enumerate(names)} if names is not None else None
  position = {}
  for image in data['images']:
    if not isinstance(image, dict) or 'id' not in image:
      raise example.DatasetError(f'{path}: an image entry without an id')
    if by_name is not None:
      name = os.path.basename(str(image.get('file_name', '')))
      if name in by_name:
        position[image['id']] = by_name[name]
    else:
      frame = int(image.get('frame_id', image['id']))
      position[image['id']] = (frame % _POSETRACK_FRAMES
                               if frame >= _POSETRACK_ID else frame)
  if not position:
    raise example.DatasetError(f'{path}: none of its images is a frame of '
                               'the input (matched by file name)')
  people: dict[int, list] = {}
  for ann in data.get('annotations', []):
    if not isinstance(ann, dict) or ann.get('image_id') not in position:
      continue
    kp = np.asarray(ann.get('keypoints', []), np.float32)
    if num_joints is None:
      num_joints = kp.size // 3
    if kp.size != 3 * num_joints:
      raise example.DatasetError(
          f'{path}: annotation {ann.get("id")} has {kp.size // 3} joints, '
          f'the model has {num_joints}')
    kp = kp.reshape(num_joints, 3)
    if (kp[:, 2] > 0).any():
      people.setdefault(position[ann['image_id']], []).append(
          (kp, int(ann.get('track_id', -1))))
  num_joints = num_joints or 0
  # A labelled image without people is a key frame too: nobody there.
  return {p: KeyFrame(
      np.stack([k for k, _ in people.get(p, [])]) if p in people else
      np.zeros((0, num_joints, 3), np.float32),
      np.array([t for _, t in people.get(p, [])], np.int64))
          for p in sorted(set(position.values()))}


@dataclasses.dataclass
class PropagatedFrame:
  """Every followed person of one frame: track ids [N], keypoints [N, K, 3]
  (x, y, visibility; 0 for a joint not labelled or lost), whether the
  frame is a key frame, and which labelled joints propagation lost [N, K]."""
  track_ids: np.ndarray
  keypoints: np.ndarray
  key_frame: bool
  lost: np.ndarray


def _continue_ids(key: KeyFrame, live: dict[int, np.ndarray], sigmas,
                  next_id: int) -> tuple[np.ndarray, int]:
  """Track ids of a key frame's people: the file's, else those of the live
  tracks [K, 3] they match, else new ones."""
  ids = key.track_ids.copy()
  free = [t for t in live if t not in set(ids.tolist())]
  missing = np.flatnonzero(ids < 0)
  if len(missing) and free:
    poses = np.stack([live[t] for t in free])
    box = lambda kp: tracking.pose_boxes(kp, 0.0, 1.0)[0]
    scores = association.similarity(key.keypoints[missing],
                                    box(key.keypoints[missing]), poses,
                                    box(poses), sigmas, 0.0)
    for row, col in association.assign(scores, _MIN_MATCH_OKS):
      ids[missing[row]] = free[col]
  for i in np.flatnonzero(ids < 0):
    ids[i] = next_id
    next_id += 1
  return ids, next_id


def propagate(frames, key_frames: dict[int, KeyFrame], method: str,
              sigmas, *, smooth: bool = True,
              model: smoothing.MotionModel = smoothing.MotionModel()
              ) -> list[PropagatedFrame]:
  """The people of every frame from the first key frame on (module
  docstring); frames before it are empty.

  Args:
    frames: the video's RGB frames, in order (an iterable: read once).
    key_frames: `read_key_frames`' result.
    method: a `propagation.METHODS` name.
    sigmas: the skeleton's OKS sigmas [K] (matching people without ids).
    smooth: smooth each track with the key frames as anchors.
    model: the smoother's motion model.
  """
  move = propagation.method(method)
  next_id = max([int(k.track_ids.max()) + 1 for k in key_frames.values()
                 if len(k.track_ids)] + [0])
  # Track id -> its current [K, 3] (visibility 0 once lost) and labelled.
  live: dict[int, np.ndarray] = {}
  labelled: dict[int, np.ndarray] = {}
  out: list[PropagatedFrame] = []
  previous = None
  for t, frame in enumerate(frames):
    key = key_frames.get(t)
    if key is not None:
      ids, next_id = _continue_ids(key, live, sigmas, next_id)
      live = {int(i): kp.copy() for i, kp in zip(ids, key.keypoints)}
      labelled = {i: kp[:, 2] > 0 for i, kp in live.items()}
    elif live and previous is not None:
      ids = list(live)
      kp = np.stack([live[i] for i in ids])
      alive = kp[..., 2] > 0
      if alive.any():
        moved, found = move(previous, frame, kp[alive][:, :2])
        kp[alive] = np.concatenate(
            [moved, np.where(found, kp[alive][:, 2], 0)[:, None]], -1)
      live = dict(zip(ids, kp))
    ids = np.array(list(live), np.int64)
    kp = (np.stack(list(live.values())) if live else
          np.zeros((0, len(sigmas), 3), np.float32))
    lost = (np.stack([labelled[i] for i in live]) & (kp[..., 2] <= 0)
            if live else np.zeros((0, len(sigmas)), bool))
    out.append(PropagatedFrame(ids, kp.astype(np.float32), key is not None,
                               lost))
    previous = frame
  if smooth:
    _smooth(out, model)
  return out


def _smooth(frames: list[PropagatedFrame], model) -> None:
  """Smooths every track in place, key frames as anchors."""
  xy = smoothing.smooth_tracks(
      [f.track_ids for f in frames], [f.keypoints[..., :2] for f in frames],
      [np.full(f.keypoints.shape[:2], _KEY_FRAME_CONFIDENCE if f.key_frame
               else 1.0) for f in frames],
      [f.keypoints[..., 2] > 0 for f in frames], model)
  for f, smoothed in zip(frames, xy):
    # Key frames stay exactly as labelled; lost joints stay unlabelled.
    if not f.key_frame:
      f.keypoints[..., :2] = np.where(f.keypoints[..., 2:] > 0, smoothed,
                                      f.keypoints[..., :2])


def agreement(propagated: PropagatedFrame, estimated: np.ndarray,
              estimated_boxes: np.ndarray, sigmas,
              keypoint_threshold: float = 0.2) -> np.ndarray:
  """OKS [N] of each propagated person with the model's estimate of it (the
  best match among `estimated` [M, K, 3], one-to-one; 0 where none)."""
  n = len(propagated.track_ids)
  out = np.zeros(n, np.float32)
  if not n or not len(estimated):
    return out
  kp = propagated.keypoints
  seen = kp[..., 2] > 0
  # Labelled joints count as fully confident in the similarity.
  scores = association.similarity(
      np.concatenate([kp[..., :2], seen[..., None].astype(np.float32)], -1),
      tracking.pose_boxes(kp, 0.0, 1.0)[0], estimated, estimated_boxes,
      sigmas, keypoint_threshold)
  for row, col in association.assign(scores, 0.0):
    out[row] = scores[row, col]
  return out
