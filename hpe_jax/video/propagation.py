"""Keypoint propagation from one frame to the next: where do the given
joints of frame t lie in frame t + 1?

Three ways, each `(previous, current, points) -> (points, found)` on RGB
uint8 frames and points [N, 2] (x, y in pixel-index coordinates):

- ``lk``: pyramidal Lucas–Kanade (`lucas_kanade.track`, jitted array code;
  the points are padded to a multiple of `_POINT_BLOCK` so that a changing
  number of people does not recompile it).
- ``orb``: the ORB descriptor (OpenCV, upright, 31-pixel patch) of each
  point in the previous frame, compared with the descriptors of candidate
  positions around it in the current frame (a coarse grid over
  `search_radius`, then every pixel near the best); the point moves to the
  position of the smallest Hamming distance, and is lost when even that is
  above `max_distance` bits of 256. Joints sit on limbs whose texture
  matches along their length, so descriptors are compared at the joint
  itself rather than at detected corners nearby.
- ``dense``: OpenCV's DIS optical flow between the frames; a point moves by
  the mean flow within `radius` pixels of it, and is lost where the flow
  back from the current frame does not return it within `max_fb_error`
  pixels (occlusion, leaving the image). Slower, but works where the
  texture is weak, and across dropped frames (large motion) when
  descriptors fail.
- ``orb+dense``: ORB, and dense flow for the points ORB lost (the issue's
  design).

`propagate_track` runs a method along a sequence from a start pose and
optionally smooths the result (`smoothing.rts_smooth`, lost joints masked).
"""

from __future__ import annotations

import functools
from typing import Callable

import cv2
import numpy as np

from hpe_jax.video import lucas_kanade
from hpe_jax.video import smoothing

_POINT_BLOCK = 64
# ORB: descriptor patch size; padding keeps points near the border usable.
_ORB_PATCH = 31
_ORB_PAD = 32
_ORB_BITS = 256


def grey(frame: np.ndarray) -> np.ndarray:
  """uint8 grey [H, W] of an RGB uint8 frame (grey frames pass through)."""
  frame = np.asarray(frame)
  return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _inside(points: np.ndarray, shape) -> np.ndarray:
  h, w = shape[:2]
  return ((points >= 0) & (points <= [w - 1, h - 1])).all(-1)


def propagate_lk(previous, current, points, *, window: int = 21,
                 levels: int = 3):
  """Pyramidal Lucas–Kanade (module docstring)."""
  points = np.asarray(points, np.float32).reshape(-1, 2)
  n = len(points)
  padded = np.zeros((-(-max(n, 1) // _POINT_BLOCK) * _POINT_BLOCK, 2),
                    np.float32)
  padded[:n] = points
  found, status = lucas_kanade.track(grey(previous), grey(current), padded,
                                     window=window, levels=levels)
  return np.asarray(found)[:n], np.asarray(status)[:n]


@functools.cache
def _orb() -> cv2.ORB:
  return cv2.ORB_create(edgeThreshold=_ORB_PATCH, patchSize=_ORB_PATCH)


def _descriptors(padded_grey: np.ndarray, points: np.ndarray):
  """ORB descriptors [N, 32] at `points` [N, 2] of an image padded by
  `_ORB_PAD`, and which points got one."""
  keypoints = [cv2.KeyPoint(float(x) + _ORB_PAD, float(y) + _ORB_PAD,
                            _ORB_PATCH, 0.0, 0.0, 0, i)
               for i, (x, y) in enumerate(points)]
  kept, desc = _orb().compute(padded_grey, keypoints)
  out = np.zeros((len(points), 32), np.uint8)
  ok = np.zeros(len(points), bool)
  if desc is not None and len(kept):
    ids = np.array([k.class_id for k in kept])
    out[ids], ok[ids] = desc, True
  return out, ok


def _hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Bit distances between descriptors a [..., 32] and b [..., 32]."""
  return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(-1)


def _grid(radius: int, step: int) -> np.ndarray:
  r = np.arange(-radius, radius + 1, step)
  return np.stack(np.meshgrid(r, r), -1).reshape(-1, 2).astype(np.float32)


def propagate_orb(previous, current, points, *, search_radius: int = 24,
                  coarse_step: int = 3, max_distance: int = 64):
  """ORB descriptors at the points, searched for nearby (module docstring)."""
  points = np.asarray(points, np.float32).reshape(-1, 2)
  pad = lambda g: cv2.copyMakeBorder(g, *[_ORB_PAD] * 4, cv2.BORDER_REFLECT)
  prev_g, cur_g = pad(grey(previous)), pad(grey(current))
  reference, has_reference = _descriptors(prev_g, points)
  moved = points.copy()
  best = np.full(len(points), _ORB_BITS)
  # Coarse grid, then every pixel around the best coarse position.
  for offsets, around in ((_grid(search_radius, coarse_step), points),
                          (_grid(coarse_step, 1), None)):
    centres = moved if around is None else around
    candidates = centres[:, None] + offsets[None]  # [N, M, 2]
    desc, ok = _descriptors(cur_g, candidates.reshape(-1, 2))
    dist = _hamming(desc.reshape(*candidates.shape[:2], 32),
                    reference[:, None])
    dist = np.where(ok.reshape(candidates.shape[:2]), dist, _ORB_BITS + 1)
    smallest = dist.min(1)
    # Ties (flat texture): the mean of the tied positions.
    tied = dist == smallest[:, None]
    moved = (candidates * tied[..., None]).sum(1) / tied.sum(1)[:, None]
    best = smallest
  found = has_reference & (best <= max_distance) & _inside(moved,
                                                           previous.shape)
  return np.where(found[:, None], moved, points), found


@functools.cache
def _dis() -> cv2.DISOpticalFlow:
  return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def _mean_flow(flow: np.ndarray, points: np.ndarray, radius: int):
  """Mean of `flow` [H, W, 2] over the pixels within `radius` of each point
  [N, 2] that lie in the image."""
  offsets = _grid(radius, 1)
  offsets = offsets[np.hypot(*offsets.T) <= radius]
  at = np.rint(points[:, None] + offsets[None]).astype(np.int64)
  h, w = flow.shape[:2]
  ok = ((at >= 0) & (at < [w, h])).all(-1)
  at = np.clip(at, 0, [w - 1, h - 1])
  values = flow[at[..., 1], at[..., 0]] * ok[..., None]
  return values.sum(1) / np.maximum(ok.sum(1), 1)[:, None]


def propagate_dense(previous, current, points, *, radius: int = 3,
                    max_fb_error: float = 2.0):
  """DIS flow averaged within `radius`, checked forwards and backwards."""
  points = np.asarray(points, np.float32).reshape(-1, 2)
  prev_g, cur_g = grey(previous), grey(current)
  forward = _dis().calc(prev_g, cur_g, None)
  backward = _dis().calc(cur_g, prev_g, None)
  moved = points + _mean_flow(forward, points, radius)
  back = moved + _mean_flow(backward, moved, radius)
  found = (_inside(points, prev_g.shape) & _inside(moved, prev_g.shape) &
           (np.linalg.norm(back - points, axis=-1) <= max_fb_error))
  return moved, found


def propagate_orb_dense(previous, current, points):
  """ORB, with dense flow for the points ORB lost."""
  moved, found = propagate_orb(previous, current, points)
  if not found.all():
    lost = ~found
    dense, dense_found = propagate_dense(previous, current,
                                         np.asarray(points)[lost])
    moved[lost], found[lost] = dense, dense_found
  return moved, found


Propagate = Callable[[np.ndarray, np.ndarray, np.ndarray],
                     tuple[np.ndarray, np.ndarray]]
METHODS: dict[str, Propagate] = {
    'lk': propagate_lk, 'orb': propagate_orb, 'dense': propagate_dense,
    'orb+dense': propagate_orb_dense}


def method(name: str) -> Propagate:
  if name not in METHODS:
    raise ValueError(f'propagation method must be one of {sorted(METHODS)}, '
                     f'got {name!r}')
  return METHODS[name]


def propagate_track(frames, keypoints, how: str, *, smooth: bool = False,
                    model: smoothing.MotionModel = smoothing.MotionModel()
                    ) -> np.ndarray:
  """Keypoints [T, ..., 3] propagated from frame 0 along `frames`.

  Args:
    frames: T RGB uint8 frames (a sequence, or any iterable).
    keypoints: [..., 3] x, y and visibility (or score) in frame 0; joints
      with 0 are not propagated.
    how: a `METHODS` name.
    smooth: run `smoothing.rts_smooth` over the propagated track, lost
      joints masked (offline: each frame uses the later ones too).
    model: the smoother's motion model.

  Returns:
    [T, ..., 3]: x, y and 1 where the joint is still followed (0 once it
    was lost: it stays where it was last found, unless smoothing moves it).
  """
  propagate = method(how)
  start = np.asarray(keypoints, np.float32)
  shape = start.shape[:-1]
  xy = start[..., :2].reshape(-1, 2).copy()
  alive = start[..., 2].reshape(-1) > 0
  track = []
  previous = None
  for frame in frames:
    if previous is not None and alive.any():
      moved, found = propagate(previous, frame, xy[alive])
      xy[alive] = np.where(found[:, None], moved, xy[alive])
      alive[np.flatnonzero(alive)[~found]] = False
    track.append(np.concatenate([xy, alive[:, None]], -1).copy())
    previous = frame
  out = np.stack(track).reshape(len(track), *shape, 3)
  if smooth:
    valid = out[..., 2] > 0
    smoothed, _ = smoothing.rts_smooth(out[..., :2], valid.astype(np.float32),
                                       valid, model)
    # Frames after a joint was lost have no measurement: the smoother
    # extrapolates its motion, a better guess than where it was last seen.
    ever = start[..., 2] > 0
    out[..., :2] = np.where(ever[..., None], np.asarray(smoothed),
                            out[..., :2])
  return out
