"""Procedurally drawn synthetic people: the built-in default dataset.

`SyntheticPeople` draws images of articulated human figures on cluttered
backgrounds together with exact ground truth for every task of hpe_jax: COCO
keypoints with visibility, person boxes and masks, head boxes (PCKh) and
six-part label maps (`skeletons.BODY_PARTS6`). Nothing is downloaded, so every
config can train on it on a fresh machine and tests use it as ground truth.

How a figure is made. A 3-D skeleton in human proportions (unit = standing
height) is posed with joint limits: elbows and knees bend one way only,
shoulders, hips, spine, neck and head turn within plausible ranges. It is
turned to a random view (mostly frontal, also profile and back), projected
orthographically, then scaled (25% to 100% of the image height by default),
stretched a little (thin/wide) and rotated in the image plane (mostly near
upright, rarely upside down). Each body segment becomes a 2-D polygon: a
tapered capsule, ellipse or chamfered bar for limbs, the convex hull of
elliptical cross-sections for the torso, a projected ellipsoid for the head
with a face region, eyes, nose and ears that follow the head's yaw and pitch,
so that the face keypoints are learnable from the drawing.

Draw order is a painter's algorithm: people from far to near; within a person
segment groups from far to near by camera depth (the far arm goes behind the
torso, the near arm in front). Every polygon is rasterised with sub-pixel
accuracy into one *owner map* (which surface is front-most at each pixel), from
which masks, the part map, boxes and visibility are read, so they agree with
the pixels exactly. Colours and textures (stripes, gradients, noise, limb
shading, outlines) are applied per owner afterwards; about half of the people
wear one material everywhere so that models must use shape and context rather
than colour. Backgrounds have gradients, noise, clutter shapes and distractor
sticks and blobs in the people's own materials; sometimes objects occlude the
people.

Visibility rule. Each joint belongs to the segments that meet at it (a wrist
to its forearm and hand, a knee to its thigh and shank, a shoulder to the
torso, neck and its upper arm, a hip to the torso and its thigh, face points
to the head). Joint ``k`` of person ``p`` is

* 0 with x = y = 0 when its pixel ``round(x), round(y)`` is outside the image
  (COCO convention);
* 2 (visible) when the front-most surface at that pixel is one of the joint's
  own segments of person ``p`` and the joint is not turned away from the
  camera;
* 1 (labelled, hidden) otherwise: another person, an occluding object, or
  another segment of the same person (e.g. the near arm over the far hip) is
  in front, or the joint faces away: the head turned more than about 57
  degrees away from an eye, 34 degrees from an ear or 105 degrees from the
  nose (profiles hide the far eye and ear, back views the face), or a
  shoulder or hip on the far side of a body turned more than about 49 degrees.
  Turned-away eyes, ears and noses are not drawn either.

The pixel tested is the one the keypoint rounds to. Limb outlines contain
their end joints (radii are at least 1.2 px) and face features are drawn
around their keypoints, so a joint that nothing covers lands on its own
segment.

Samples are a pure function of (seed, index): the geometry uses
``default_rng((seed, index, 0))`` and the pixels ``default_rng((seed, index,
1))``, so `annotation` never pays for texturing and any sample can be made on
its own in any process.

Run as a program, the module writes a COCO-format copy of the dataset::

  python -m hpe_jax.data.synthetic --output=DIR --num_images=N --seed=S

(also ``--image_size=H,W``, ``--min_people``, ``--max_people``,
``--jpeg_quality``) giving ``DIR/images/<id>.jpg``, ``DIR/parts/<id>.png``
(part labels) and ``DIR/annotations.json`` (keypoints in the same pixel-index
coordinates as the `Example`s, masks as RLE). `export` does the same from
Python.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import json
import math
import os
import threading
from typing import Any, Sequence

from absl import app
from absl import flags
import cv2
import numpy as np

from hpe_jax.data import coco_format
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons

# Polygon vertices are passed to OpenCV in 1/16 pixel units.
_SHIFT = 4
_SUBPIXEL = 1 << _SHIFT

# Segments of one person, each drawn as one polygon and owning its pixels.
PRIMITIVES = (
    'torso', 'neck', 'skull', 'face', 'left_ear', 'right_ear', 'left_eye',
    'right_eye', 'nose', 'left_upper_arm', 'left_lower_arm', 'left_hand',
    'right_upper_arm', 'right_lower_arm', 'right_hand', 'left_upper_leg',
    'left_lower_leg', 'left_foot', 'right_upper_leg', 'right_lower_leg',
    'right_foot')
_P = {name: k for k, name in enumerate(PRIMITIVES)}
_NUM_PRIMITIVES = len(PRIMITIVES)
_HEAD_PRIMITIVES = ('skull', 'face', 'left_ear', 'right_ear', 'left_eye',
                    'right_eye', 'nose')

_PART_OF_PRIMITIVE = {
    'torso': 'torso', 'neck': 'torso', 'upper_arm': 'upper_arms',
    'lower_arm': 'lower_arms', 'hand': 'lower_arms', 'upper_leg': 'upper_legs',
    'lower_leg': 'lower_legs', 'foot': 'lower_legs'}


def _primitive_part(name: str) -> int:
  if name in _HEAD_PRIMITIVES:
    return skeletons.BODY_PARTS6.label_names.index('head')
  base = name.removeprefix('left_').removeprefix('right_')
  return skeletons.BODY_PARTS6.label_names.index(_PART_OF_PRIMITIVE[base])


_PRIMITIVE_PART = np.array([_primitive_part(n) for n in PRIMITIVES], np.uint8)


def joint_primitives(joint: str) -> tuple[str, ...]:
  """The segments a COCO joint belongs to (see the visibility rule)."""
  if joint in ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear'):
    return _HEAD_PRIMITIVES
  side, name = joint.split('_', 1)
  return {
      'shoulder': ('torso', 'neck', f'{side}_upper_arm'),
      'elbow': (f'{side}_upper_arm', f'{side}_lower_arm'),
      'wrist': (f'{side}_lower_arm', f'{side}_hand'),
      'hip': ('torso', f'{side}_upper_leg'),
      'knee': (f'{side}_upper_leg', f'{side}_lower_leg'),
      'ankle': (f'{side}_lower_leg', f'{side}_foot'),
  }[name]


# [K, NUM_PRIMITIVES]: whether primitive k owns joint j.
_JOINT_OWNERS = np.array(
    [[p in joint_primitives(j) for p in PRIMITIVES]
     for j in skeletons.COCO17.joint_names], bool)

# Owner-map ids: 0 background, then occluding objects, then people.
_MAX_OCCLUDERS = 3
_FIRST_PERSON_ID = 1 + _MAX_OCCLUDERS
# Times a hardly visible person is replaced before being left out.
_MAX_REDRAWS = 10

# Face keypoints as directions on the head ellipsoid (x = the person's left,
# y = down, z = backwards), with the least "facing" (minus the camera-space z
# of the direction) at which each is still seen.
_FACE_DIRECTIONS = np.array([
    [0.0, 0.25, -0.97],    # nose
    [0.45, -0.15, -0.88],  # left eye
    [-0.45, -0.15, -0.88],  # right eye
    [0.95, 0.1, 0.05],     # left ear
    [-0.95, 0.1, 0.05],    # right ear
])
_FACE_DIRECTIONS /= np.linalg.norm(_FACE_DIRECTIONS, axis=1, keepdims=True)
_FACE_MIN_FACING = np.array([-0.25, 0.1, 0.1, -0.6, -0.6])
# A shoulder or hip is behind the torso once its side points this far away.
_FAR_SIDE_DEPTH = 0.75

_COCO_FACE = 5  # The first five COCO joints are face keypoints.


def _rot_x(a: float) -> np.ndarray:
  c, s = math.cos(a), math.sin(a)
  return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
  c, s = math.cos(a), math.sin(a)
  return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
  c, s = math.cos(a), math.sin(a)
  return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _unit(v: np.ndarray) -> np.ndarray:
  return v / max(math.sqrt(float(v @ v)), 1e-9)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  # np.cross costs ten times more on single 3-vectors.
  return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                   a[0] * b[1] - a[1] * b[0]])


def _rotate_about(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
  """Rodrigues rotation of `v` about the unit vector `axis`."""
  c, s = math.cos(angle), math.sin(angle)
  return v * c + _cross(axis, v) * s + axis * (float(axis @ v) * (1 - c))


def _bend_direction(d: np.ndarray, prefer: Sequence[float],
                    fallback: Sequence[float]) -> np.ndarray:
  """Unit vector normal to `d`, as close to `prefer` as possible."""
  for ref in (np.asarray(prefer, float), np.asarray(fallback, float)):
    b = ref - float(ref @ d) * d
    if b @ b > 0.09 * (ref @ ref):
      return _unit(b)
  return _unit(_cross(d, np.array([1.0, 0.0, 0.0])))


_STEPS = np.arange(32, dtype=np.float64)


def _ellipse(c: np.ndarray, axes: np.ndarray) -> np.ndarray:
  """Outline of c + axes @ (cos t, sin t), an ellipse given by a 2x2 matrix."""
  r = math.sqrt(float((axes * axes).sum(0).max()))
  # Enough vertices that the polygon stays within ~0.2 px of the curve.
  n = int(min(max(2 * math.pi * (1.0 + math.sqrt(r)), 8), 28))
  t = 2 * math.pi / n * _STEPS[:n]
  return c + np.stack([np.cos(t), np.sin(t)], -1) @ axes.T


def _axes(u: np.ndarray, ru: float, rv: float) -> np.ndarray:
  """Ellipse axes: semi-axis `ru` along unit vector `u`, `rv` across it."""
  return np.array([[u[0] * ru, -u[1] * rv], [u[1] * ru, u[0] * rv]])


def _to_fixed(poly: np.ndarray) -> np.ndarray:
  return np.round(poly * _SUBPIXEL).astype(np.int32)


_RING = np.stack([np.cos(np.arange(14) * np.pi / 7),
                  np.sin(np.arange(14) * np.pi / 7)])
_CAP_AZIMUTH = np.arange(12) * np.pi / 6
# Tilts the face cap's centre below the head's equator.
_FACE_TILT = _rot_x(0.3)


def _face_cap(angle: float) -> np.ndarray:
  """Unit directions filling a cone of half-angle `angle` around the face."""
  g = np.array([[0.0], [1 / 3], [2 / 3], [1.0]]) * angle
  dirs = np.stack(np.broadcast_arrays(
      np.sin(g) * np.cos(_CAP_AZIMUTH), np.sin(g) * np.sin(_CAP_AZIMUTH),
      -np.cos(g)), -1).reshape(-1, 3)
  return dirs @ _FACE_TILT.T


def _segment_outlines(style: int, a: np.ndarray, b: np.ndarray,
                      ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
  """[N, V, 2] outlines of limbs from a[i] to b[i] with radii ra[i], rb[i].

  Style 0 is a tapered capsule (two discs and their outer tangents), 1 an
  ellipse reaching past both joints, 2 a bar with chamfered ends. All
  contain their end points, so a joint's pixel is always on its limb.
  """
  d = b - a
  length = np.hypot(d[:, 0], d[:, 1])
  u = np.where(length[:, None] > 1e-6, d / np.maximum(length, 1e-6)[:, None],
               [0.0, 1.0])
  n = np.stack([-u[:, 1], u[:, 0]], -1)
  # Vertices per cap: enough that the polygon stays within ~0.2 px of a
  # circle of the largest radius.
  v = int(min(max(2 + 2.5 * math.sqrt(max(ra.max(), rb.max())), 8), 18))
  steps = _STEPS[:v] / (v - 1)
  if style == 0:
    theta = np.arctan2(u[:, 1], u[:, 0])
    # Tangent points sit at +-alpha from the axis on both discs; when one
    # disc contains the other alpha is 0 or pi and one cap degenerates to a
    # point inside the other disc.
    alpha = np.arccos(np.clip((ra - rb) / np.maximum(length, 1e-9), -1, 1))
    tb = (theta - alpha)[:, None] + (2 * alpha)[:, None] * steps
    ta = (theta + alpha)[:, None] + (2 * (np.pi - alpha))[:, None] * steps
    t = np.concatenate([tb, ta], 1)
    c = np.concatenate([np.repeat(b[:, None], v, 1),
                        np.repeat(a[:, None], v, 1)], 1)
    r = np.concatenate([np.repeat(rb[:, None], v, 1),
                        np.repeat(ra[:, None], v, 1)], 1)
    return c + r[..., None] * np.stack([np.cos(t), np.sin(t)], -1)
  big = np.maximum(ra, rb)
  if style == 1:
    t = 2 * np.pi * _STEPS[:2 * v] / (2 * v)
    along = (length / 2 + 0.7 * big)[:, None] * np.cos(t)
    across = (1.1 * big)[:, None] * np.sin(t)
    return ((a + b)[:, None] / 2 + along[..., None] * u[:, None] +
            across[..., None] * n[:, None])
  # Chamfered bar; it can be slightly concave, which fillPoly handles.
  coef = np.array([  # (end b?, along, across) per vertex, in units of radius
      (0, -0.6, -0.7), (0, 0, -1), (1, 0, -1), (1, 0.6, -0.7), (1, 0.6, 0.7),
      (1, 0, 1), (0, 0, 1), (0, -0.6, 0.7)])
  end = np.where(coef[:, 0, None] > 0, b[:, None], a[:, None])
  rad = np.where(coef[:, 0] > 0, rb[:, None], ra[:, None])
  return (end + (rad * coef[:, 1])[..., None] * u[:, None] +
          (rad * coef[:, 2])[..., None] * n[:, None])


@dataclasses.dataclass
class _Person:
  """One posed, projected person, ready to rasterise."""
  keypoints: np.ndarray    # [17, 2] pixel-index coordinates, 1/16 px grid
  turned_away: np.ndarray  # [17] bool: hidden by the person's own volume
  # Back to front: (primitive index, int32 polygon in 1/16 px).
  polygons: list[tuple[int, np.ndarray]]
  # [NUM_PRIMITIVES, 5] texture frame per primitive: origin x, y, unit axis
  # x, y, half width in pixels (for stripes along limbs and shading).
  frames: np.ndarray
  head_box: np.ndarray     # [4] x1, y1, x2, y2 pixel edges, may leave image
  box: np.ndarray          # [4] extent of the outlines in pixels
  height: float            # standing height in pixels


def _sample_arm(rng: np.random.Generator):
  """Unit directions of upper arm, forearm and hand of a left arm."""
  deg = math.radians
  # Elevation from hanging down, in a plane turned from sideways (0) to
  # forwards (90) and across the chest (> 90) or slightly backwards (< 0).
  elevation = rng.uniform(0, 45) if rng.random() < 0.55 else rng.uniform(0, 170)
  azimuth = rng.uniform(-35, 125)
  if azimuth < 0:
    elevation = min(elevation, 60)
  el, az = deg(elevation), deg(azimuth)
  upper = np.array([math.cos(az) * math.sin(el), math.cos(el),
                    -math.sin(az) * math.sin(el)])
  flexion = deg(rng.uniform(0, 20) if rng.random() < 0.4 else
                rng.uniform(0, 150))
  # Flexion brings the forearm forwards for a hanging arm; rotating the
  # upper arm (twist) turns that plane inwards or outwards.
  bend = _bend_direction(upper, (0, -0.3, -1), (0, -1, 0))
  bend = _rotate_about(bend, upper, deg(min(max(rng.normal(0, 35), -80), 80)))
  fore = math.cos(flexion) * upper + math.sin(flexion) * bend
  hand = _unit(fore + 0.35 * rng.normal(size=3))
  return upper, fore, hand


def _sample_leg(rng: np.random.Generator):
  """Unit directions of thigh, shank and foot of a left leg."""
  deg = math.radians
  if rng.random() < 0.5:
    flexion, abduction = rng.uniform(-15, 25), rng.uniform(-5, 20)
    knee = rng.uniform(0, 25)
  else:
    flexion, abduction = rng.uniform(-35, 115), rng.uniform(-10, 45)
    knee = rng.uniform(0, 145)
  fl, ab, knee = deg(flexion), deg(abduction), deg(knee)
  thigh = np.array([math.sin(ab), math.cos(ab) * math.cos(fl),
                    -math.cos(ab) * math.sin(fl)])
  # Knees bend backwards; for a thigh raised forwards that means downwards.
  bend = _bend_direction(thigh, (0, 0.35, 1), (0, 1, 0))
  bend = _rotate_about(bend, thigh, deg(rng.normal(0, 8)))
  shank = math.cos(knee) * thigh + math.sin(knee) * bend
  foot = _bend_direction(shank, (0, 0, -1), (0, 1, 0))
  foot = _rotate_about(foot, shank, deg(rng.uniform(-10, 35)))
  return thigh, shank, foot


# Limb segments drawn as outlines: primitive, radius at both ends (units of
# standing height, before the person's thickness).
_LIMBS = (
    ('left_upper_arm', 0.034, 0.027), ('left_lower_arm', 0.027, 0.019),
    ('left_hand', 0.019, 0.024), ('right_upper_arm', 0.034, 0.027),
    ('right_lower_arm', 0.027, 0.019), ('right_hand', 0.019, 0.024),
    ('left_upper_leg', 0.058, 0.04), ('left_lower_leg', 0.04, 0.026),
    ('left_foot', 0.024, 0.02), ('right_upper_leg', 0.058, 0.04),
    ('right_lower_leg', 0.04, 0.026), ('right_foot', 0.024, 0.02),
    ('neck', 0.03, 0.028))
_LIMB_PRIMS = np.array([_P[n] for n, _, _ in _LIMBS])
_LIMB_RADII = np.array([(ra, rb) for _, ra, rb in _LIMBS])
# Draw groups of limbs (indices into _LIMBS), each ordered by its depth; a
# hand goes on its forearm, a shank on its foot.
_LIMB_GROUPS = ((0,), (1, 2), (3,), (4, 5), (6,), (8, 7), (9,), (11, 10))
_LIMB_GROUP_MEAN = np.array([np.isin(np.arange(len(_LIMBS)), g) / len(g)
                             for g in _LIMB_GROUPS])
# Face features: joint index, primitive, size along and across the head.
_FEATURES = ((3, 'left_ear', 0.2, 0.15), (4, 'right_ear', 0.2, 0.15),
             (1, 'left_eye', 0.1, 0.17), (2, 'right_eye', 0.1, 0.17),
             (0, 'nose', 0.16, 0.13))


def _sample_person(rng: np.random.Generator, image_hw: tuple[int, int],
                   height_range: tuple[float, float]) -> _Person:
  """Poses, projects and outlines one person at a random place and size."""
  img_h, img_w = image_hw
  deg = math.radians

  # Proportions, in units of standing height.
  thick = rng.uniform(0.75, 1.45)
  leg_len, arm_len, torso_len, head_size, shoulder_w, hip_w = rng.uniform(
      (0.92, 0.92, 0.9, 0.88, 0.88, 0.85), (1.08, 1.08, 1.1, 1.15, 1.15, 1.2))
  torso_len *= 0.29
  head_r = np.array([0.047, 0.064, 0.058]) * head_size
  shoulder_hw = 0.1 * shoulder_w * thick ** 0.3
  hip_hw = 0.055 * hip_w * thick ** 0.3

  # Body frame: x = the person's left, y = down, z = backwards, origin at the
  # pelvis. Torso pose: forward lean, side bend, shoulders twisted on hips.
  if rng.random() < 0.85:
    lean = min(max(rng.normal(5, 10), -20), 50)
  else:
    lean = rng.uniform(-20, 80)
  torso_rot = _rot_z(deg(rng.normal(0, 6))) @ _rot_x(deg(lean))
  shoulder_rot = torso_rot @ _rot_y(deg(rng.normal(0, 12)))
  shoulder_c = torso_rot @ np.array([0, -torso_len, 0])
  side = np.array([1.0, -1.0])[:, None]
  shoulders = shoulder_c + side * shoulder_rot[:, 0] * shoulder_hw
  hips = side * torso_rot[:, 0] * hip_hw

  # The torso is the hull of elliptical cross-sections.
  chest, waist, pelvis = rng.uniform(0.9, 1.15, 3) * thick ** 0.6
  # Cross-sections: height, half width, half depth; the upper three turn
  # with the shoulders.
  rings = np.array([
      (-torso_len - 0.012, 0.7 * shoulder_hw, 0.045 * thick),
      (-torso_len + 0.035, 1.05 * shoulder_hw * chest, 0.06 * thick),
      (-0.6 * torso_len, 0.95 * shoulder_hw * chest, 0.065 * thick),
      (-0.3 * torso_len, 0.085 * waist, 0.06 * thick),
      (0.0, (hip_hw + 0.04) * pelvis, 0.07 * thick),
      (0.05, 0.75 * (hip_hw + 0.04) * pelvis, 0.05 * thick)])
  ring_pts = np.stack(np.broadcast_arrays(
      rings[:, 1:2] * _RING[0], rings[:, :1], rings[:, 2:] * _RING[1]), -1)
  torso_pts = np.concatenate([ring_pts[:3].reshape(-1, 3) @ shoulder_rot.T,
                              ring_pts[3:].reshape(-1, 3) @ torso_rot.T])

  neck_rot = (torso_rot @ _rot_z(deg(rng.normal(0, 8))) @
              _rot_x(deg(min(max(rng.normal(0, 12), -30), 40))))
  head_c = shoulder_c + neck_rot @ [0, -0.045 - 0.85 * head_r[1], 0]
  yaw = rng.normal(0, 20) if rng.random() < 0.6 else rng.uniform(-80, 80)
  head_rot = neck_rot @ _rot_y(deg(yaw))
  face_pts = head_c + (_FACE_DIRECTIONS * head_r) @ head_rot.T

  arm_pts, leg_pts = [], []
  for s, flip in enumerate((np.ones(3), np.array([-1.0, 1.0, 1.0]))):
    up, fore, hand = (flip * d for d in _sample_arm(rng))
    elbow = shoulders[s] + 0.17 * arm_len * up
    wrist = elbow + 0.145 * arm_len * fore
    arm_pts.append([elbow, wrist, wrist + 0.065 * hand])
    thigh, shank, foot = (flip * d for d in _sample_leg(rng))
    knee = hips[s] + 0.245 * leg_len * thigh
    ankle = knee + 0.235 * leg_len * shank
    leg_pts.append([knee, ankle, ankle + 0.02 * shank - 0.03 * foot,
                    ankle + 0.025 * shank + 0.1 * foot])
  arm_pts = np.array(arm_pts)  # [side, (elbow, wrist, hand tip), 3]
  leg_pts = np.array(leg_pts)  # [side, (knee, ankle, heel, toe), 3]

  # View: mostly frontal, some from behind, the rest anywhere; the camera is
  # a little above or below.
  u = rng.random()
  view = (rng.normal(0, 25) if u < 0.55 else
          rng.normal(180, 25) if u < 0.65 else rng.uniform(-180, 180))
  cam = _rot_x(deg(rng.normal(0, 8))) @ _rot_y(deg(view))

  # In the image: size, stretch, in-plane rotation.
  height = img_h * math.exp(rng.uniform(math.log(height_range[0]),
                                        math.log(height_range[1])))
  u = rng.random()
  roll = deg(rng.normal(0, 7) if u < 0.65 else
             rng.uniform(-40, 40) if u < 0.93 else rng.uniform(-180, 180))
  to_image = height * np.array(
      [[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]]
  ) @ np.diag([math.exp(rng.normal(0, 0.08)), 1.0])
  lin = to_image @ cam[:2]  # body frame -> pixels, up to a shift
  depth_axis = cam[2]

  joints3 = np.concatenate([
      face_pts, shoulders, arm_pts[:, 0], arm_pts[:, 1], hips, leg_pts[:, 0],
      leg_pts[:, 1]])
  extent = np.concatenate([joints3, arm_pts[:, 2], leg_pts[:, 3],
                           [head_c - [0, head_r[1], 0]]]) @ lin.T
  lo, hi = extent.min(0), extent.max(0)
  # Centre the figure so that a part of it may leave the image.
  slack = (hi - lo) * [0.3, 0.15]
  a = (hi - lo) / 2 - slack
  b = np.array([img_w, img_h]) - (hi - lo) / 2 + slack
  shift = rng.uniform(np.minimum(a, b), np.maximum(a, b)) - (lo + hi) / 2

  def px(p: np.ndarray) -> np.ndarray:
    return p @ lin.T + shift

  keypoints = np.round(px(joints3) * _SUBPIXEL) / _SUBPIXEL

  turned_away = np.zeros(17, bool)
  facing = -(_FACE_DIRECTIONS @ (cam @ head_rot)[2])
  turned_away[:_COCO_FACE] = facing < _FACE_MIN_FACING
  # Shoulders (5, 6) and hips (11, 12) on the far side of a body seen
  # side-on are behind the torso.
  turned_away[[5, 6]] = (depth_axis @ shoulder_rot[:, 0]) * side[:, 0] > (
      _FAR_SIDE_DEPTH)
  turned_away[[11, 12]] = (depth_axis @ torso_rot[:, 0]) * side[:, 0] > (
      _FAR_SIDE_DEPTH)

  # Limbs, all at once.
  starts = np.concatenate([shoulders[:1], arm_pts[0, :2], shoulders[1:],
                           arm_pts[1, :2], hips[:1], leg_pts[0, :1],
                           leg_pts[0, 2:3], hips[1:], leg_pts[1, :1],
                           leg_pts[1, 2:3], shoulder_c[None]])
  ends = np.concatenate([arm_pts[0], arm_pts[1], leg_pts[0, :2],
                         leg_pts[0, 3:], leg_pts[1, :2], leg_pts[1, 3:],
                         head_c[None]])
  radii = np.maximum(_LIMB_RADII * height * thick *
                     rng.uniform(0.9, 1.1, (len(_LIMBS), 1)), 1.2)
  a2, b2 = px(starts), px(ends)
  style = _pick(rng, (0.6, 0.2, 0.2))
  limb_polys = _to_fixed(_segment_outlines(style, a2, b2, radii[:, 0],
                                           radii[:, 1]))
  limb_depth = (starts + ends) @ depth_axis / 2
  axis = b2 - a2
  axis /= np.maximum(np.hypot(axis[:, 0], axis[:, 1]), 1e-6)[:, None]
  frames = np.zeros((_NUM_PRIMITIVES, 5))
  frames[_LIMB_PRIMS] = np.concatenate([a2, axis, radii.max(1)[:, None]], 1)

  pelvis_px, shoulder_px = px(np.zeros(3)), px(shoulder_c)
  spine = _unit(shoulder_px - pelvis_px)
  torso_poly = cv2.convexHull(px(torso_pts).astype(np.float32))[:, 0]
  torso_half = 0.5 * float(np.ptp(
      (torso_poly - pelvis_px) @ np.array([-spine[1], spine[0]])))
  frames[_P['torso']] = (*pelvis_px, *spine, max(torso_half, 1.0))
  torso_depth = float((shoulder_c @ depth_axis) / 2)

  # The head's outline is the projection of its ellipsoid.
  head_px = px(head_c)
  proj = lin @ head_rot @ np.diag(head_r)
  chol = np.linalg.cholesky(proj @ proj.T + 1e-9 * np.eye(2))
  skull = _ellipse(head_px, chol)
  r = max(head_r[0] * height, 1.0)
  head_up = lin @ head_rot @ [0, -1.0, 0]
  head_up = (_unit(head_up) if head_up @ head_up > (0.2 * height) ** 2
             else _unit(lin @ [0, -1.0, 0]))
  frames[[_P[n] for n in _HEAD_PRIMITIVES]] = (*head_px, *(-head_up), r)
  # The neck leads the head's group so that the head always covers it.
  head = [(_P['neck'], limb_polys[-1]), (_P['skull'], _to_fixed(skull))]
  # Face: the visible part of a cap around the front-lower direction.
  cap = _face_cap(deg(rng.uniform(50, 72)))
  front = (cap @ (cam @ head_rot).T)[:, 2] < 0
  if front.sum() >= 3:
    cap_px = px(head_c + (cap[front] * head_r) @ head_rot.T)
    head.append((_P['face'], _to_fixed(
        cv2.convexHull(cap_px.astype(np.float32))[:, 0])))
  for j, name, along, across in _FEATURES:
    if not turned_away[j]:
      head.append((_P[name], _to_fixed(_ellipse(keypoints[j], _axes(
          head_up, max(along * head_r[1] * height, 0.7),
          max(across * head_r[0] * height, 0.7))))))

  # Painter's order: torso, head (always in front of the torso) and limb
  # groups sorted far to near; at equal depth limbs go over the torso.
  groups = [(torso_depth + 0.02, [(_P['torso'], _to_fixed(torso_poly))]),
            (min(float(head_c @ depth_axis) - 0.03, torso_depth), head)]
  for g, d in zip(_LIMB_GROUPS, _LIMB_GROUP_MEAN @ limb_depth):
    groups.append((d, [(int(_LIMB_PRIMS[i]), limb_polys[i]) for i in g]))
  groups.sort(key=lambda g: -g[0])
  polygons = [item for _, group in groups for item in group]

  everything = np.concatenate([p for _, p in polygons]) / _SUBPIXEL
  head_pts = np.concatenate([p for k, p in head if k != _P['neck']]
                            ) / _SUBPIXEL
  # Index coordinates to pixel edges: pixel j spans [j, j + 1].
  head_box = np.concatenate([head_pts.min(0), head_pts.max(0)]) + 0.5
  return _Person(
      keypoints=keypoints, turned_away=turned_away, polygons=polygons,
      frames=frames, head_box=head_box,
      box=np.concatenate([everything.min(0), everything.max(0)]),
      height=height)


def _sample_occluder(rng: np.random.Generator, image_hw: tuple[int, int],
                     people: Sequence[_Person]) -> np.ndarray:
  """Outline (1/16 px) of an object in front of the people."""
  h, w = image_hw
  if people and rng.random() < 0.8:
    # Near someone, or it would rarely hide anything.
    box = people[rng.integers(len(people))].box
    centre = rng.uniform(box[:2], box[2:])
  else:
    centre = rng.uniform((0, 0), (w, h))
  size = min(h, w) * np.exp(rng.uniform(np.log(0.06), np.log(0.35)))
  angle = rng.uniform(0, np.pi)
  u = np.array([np.cos(angle), np.sin(angle)])
  kind = rng.integers(3)
  if kind == 0:  # pole or plank
    half = u * size * rng.uniform(1, 3)
    r = size * rng.uniform(0.08, 0.25)
    poly = _segment_outlines(2, (centre - half)[None], (centre + half)[None],
                             np.array([r]), np.array([r]))[0]
  elif kind == 1:
    poly = _ellipse(centre, _axes(u, size, size * rng.uniform(0.3, 1.0)))
  else:
    pts = centre + size * rng.uniform(-1, 1, (6, 2))
    poly = cv2.convexHull(pts.astype(np.float32))[:, 0].astype(float)
  return _to_fixed(poly)


@dataclasses.dataclass
class Scene:
  """The geometry of one sample: everything except the pixel colours.

  Attributes:
    owner: uint16 [H, W] front-most surface per pixel: 0 background,
      1.._MAX_OCCLUDERS occluding objects, then people's primitives.
    owner_person: int32 lookup, owner id -> person index (-1 none).
    owner_primitive: int32 lookup, owner id -> index into `PRIMITIVES`
      (-1 none).
    turned_away: bool [P, 17], joints hidden by the person's own volume.
    annotation: the `Example` annotation keys.
    person_masks: uint8 [P, H, W].
    part_map: uint8 [H, W].
    frames: float [P, NUM_PRIMITIVES, 5] texture frames (see `_Person`).
    heights: float [P] standing heights in pixels.
    num_occluders: occluders drawn (owner ids 1..num_occluders).
  """
  owner: np.ndarray
  owner_person: np.ndarray
  owner_primitive: np.ndarray
  turned_away: np.ndarray
  annotation: dict[str, Any]
  person_masks: np.ndarray
  part_map: np.ndarray
  frames: np.ndarray
  heights: np.ndarray
  num_occluders: int


def _rasterise(image_hw: tuple[int, int], people: Sequence[_Person],
               occluders: Sequence[np.ndarray]) -> np.ndarray:
  owner = np.zeros(image_hw, np.uint16)
  for p, person in enumerate(people):
    base = _FIRST_PERSON_ID + p * _NUM_PRIMITIVES
    for k, poly in person.polygons:
      cv2.fillPoly(owner, [poly], base + k, cv2.LINE_8, _SHIFT)
  for i, poly in enumerate(occluders):
    cv2.fillPoly(owner, [poly], 1 + i, cv2.LINE_8, _SHIFT)
  return owner


def _owner_luts(num_people: int) -> tuple[np.ndarray, np.ndarray]:
  n = _FIRST_PERSON_ID + num_people * _NUM_PRIMITIVES
  person = np.full(n, -1, np.int32)
  primitive = np.full(n, -1, np.int32)
  person[_FIRST_PERSON_ID:] = np.repeat(np.arange(num_people), _NUM_PRIMITIVES)
  primitive[_FIRST_PERSON_ID:] = np.tile(np.arange(_NUM_PRIMITIVES), num_people)
  return person, primitive


@dataclasses.dataclass(frozen=True)
class _Config:
  """Scene and drawing settings (see `SyntheticPeople`)."""
  image_hw: tuple[int, int]
  min_people: int
  max_people: int
  height_range: tuple[float, float]
  occluder_prob: float
  min_visible_fraction: float
  uniform_colour_prob: float
  max_clutter: int


def _make_scene(rng: np.random.Generator, cfg: _Config) -> Scene:
  """Samples people and occluders; redraws people who are hardly visible."""
  h, w = cfg.image_hw
  min_pixels = cfg.min_visible_fraction * h * w

  def person() -> tuple[_Person, float]:
    p = _sample_person(rng, cfg.image_hw, cfg.height_range)
    # Larger usually means nearer; nearer people are drawn later.
    return p, p.height * rng.uniform(0.7, 1.3)

  people = sorted((person() for _ in range(
      rng.integers(cfg.min_people, cfg.max_people + 1))), key=lambda p: p[1])
  occluders = []
  if rng.random() < cfg.occluder_prob:
    occluders = [_sample_occluder(rng, cfg.image_hw, [p for p, _ in people])
                 for _ in range(rng.integers(1, _MAX_OCCLUDERS + 1))]
  for attempt in range(_MAX_REDRAWS + 1):
    drawn = [p for p, _ in people]
    owner = _rasterise(cfg.image_hw, drawn, occluders)
    areas = np.bincount(owner.ravel(), minlength=_FIRST_PERSON_ID + len(
        drawn) * _NUM_PRIMITIVES)[_FIRST_PERSON_ID:].reshape(
            len(drawn), _NUM_PRIMITIVES).sum(1)
    small = areas < min_pixels
    if not small.any():
      break
    if attempt == _MAX_REDRAWS:
      # Removing people only uncovers the others, so one redraw suffices.
      drawn = [p for p, s in zip(drawn, small) if not s]
      owner = _rasterise(cfg.image_hw, drawn, occluders)
      break
    people = sorted((person() if s else p for p, s in zip(people, small)),
                    key=lambda p: p[1])
  return _finish_scene(owner, drawn, len(occluders), cfg)


def _lookup(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """table[ids]; through cv2.LUT, several times faster, when ids fit a byte."""
  if len(table) > 256:
    return table[ids]
  padded = np.zeros(256, table.dtype)
  padded[:len(table)] = table
  return cv2.LUT(ids.astype(np.uint8), padded)


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
  """Same as `example.boxes_from_masks`, from row and column projections."""
  boxes = np.zeros((len(masks), 4), np.float32)
  rows, cols = masks.any(2), masks.any(1)
  for p in range(len(masks)):
    ys, xs = np.flatnonzero(rows[p]), np.flatnonzero(cols[p])
    if len(xs):
      boxes[p] = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
  return boxes


def _finish_scene(owner: np.ndarray, people: Sequence[_Person],
                  num_occluders: int, cfg: _Config) -> Scene:
  """Reads masks, part map, boxes and visibility off the owner map."""
  h, w = cfg.image_hw
  n = len(people)
  person_of, primitive_of = _owner_luts(n)
  part_of = np.zeros(len(person_of), np.uint8)
  part_of[_FIRST_PERSON_ID:] = np.tile(_PRIMITIVE_PART, n)
  masks = np.empty((n, h, w), np.uint8)
  for p in range(n):
    masks[p] = _lookup((person_of == p).astype(np.uint8), owner)
  part_map = _lookup(part_of, owner)

  xy = np.array([p.keypoints for p in people], float).reshape(n, 17, 2)
  turned_away = np.array([p.turned_away for p in people], bool).reshape(n, 17)
  ij = np.floor(xy + 0.5).astype(np.int64)
  inside = ((ij >= 0) & (ij < [w, h])).all(-1)
  at = owner[np.clip(ij[..., 1], 0, h - 1), np.clip(ij[..., 0], 0, w - 1)]
  own = ((person_of[at] == np.arange(n)[:, None]) &
         (primitive_of[at] >= 0) &
         _JOINT_OWNERS[np.arange(17), primitive_of[at]])
  v = np.where(inside, np.where(own & ~turned_away, 2, 1), 0)
  keypoints = np.concatenate(
      [np.where(inside[..., None], xy, 0), v[..., None]], -1)

  head_boxes = np.array([p.head_box for p in people], float).reshape(n, 4)
  off = ((head_boxes[:, 2] <= 0) | (head_boxes[:, 0] >= w) |
         (head_boxes[:, 3] <= 0) | (head_boxes[:, 1] >= h))
  head_boxes[off] = np.nan
  annotation = dict(
      keypoints=keypoints.astype(np.float32),
      boxes=_mask_boxes(masks),
      head_boxes=head_boxes.astype(np.float32),
      is_crowd=np.zeros(n, bool))
  return Scene(
      owner=owner, owner_person=person_of, owner_primitive=primitive_of,
      turned_away=turned_away, annotation=annotation, person_masks=masks,
      part_map=part_map,
      frames=np.array([p.frames for p in people], float).reshape(
          n, _NUM_PRIMITIVES, 5),
      heights=np.array([p.height for p in people], float),
      num_occluders=num_occluders)


# ---------------------------------------------------------------------------
# Pixels.
#
# Every surface (background, clutter shape, occluder, person primitive) has a
# material and a frame (origin, unit axis, half width). Both fold into one row
# of per-surface parameters; the image is then computed for all pixels at
# once from parameter planes looked up by surface id.
#
# Texture coordinates are along (a) and across (b) the surface's axis from its
# origin: stripes = sin(k (a cos t + b sin t)), gradient = a linear ramp,
# noise = three shared noise fields; shading darkens limbs towards their
# edges (|b| -> half width) so that touching parts of one colour separate.

# A material: stripe wave number, angle to the axis and sharpness (0.5 sine,
# large = hard edges), gradient inverse length and angle, the weights of
# stripes, gradient and the three noise fields, edge shading, two colours.
_MAT = ('k', 'stripe_angle', 'sharp', 'ginv', 'grad_angle', 'ws', 'wg', 'w0',
        'w1', 'w2', 'shade', 'r1', 'g1', 'b1', 'r2', 'g2', 'b2')
_M = {k: i for i, k in enumerate(_MAT)}
_COLOURS = slice(_M['r1'], _M['b2'] + 1)

# A surface row: the planes (in image x, y) of the stripe phase, gradient and
# across-axis coordinate, then the material's weights and colours.
_ROW = ('sx', 'sy', 's0', 'gx', 'gy', 'g0', 'hx', 'hy', 'h0', 'sharp', 'ws',
        'wg', 'w0', 'w1', 'w2', 'shade', 'r1', 'g1', 'b1', 'r2', 'g2', 'b2')


def _pick(rng: np.random.Generator, probs: Sequence[float]) -> int:
  """Index drawn with the given probabilities (cheaper than rng.choice)."""
  u = rng.random()
  for i, p in enumerate(probs):
    u -= p
    if u < 0:
      return i
  return len(probs) - 1


def _hsv_colour(rng: np.random.Generator, val=(0.08, 1.0)) -> np.ndarray:
  # Many greys and pale colours as well as saturated ones.
  rgb = colorsys.hsv_to_rgb(rng.random(), rng.random(), rng.uniform(*val))
  return 255 * np.array(rgb)


def _skin_colour(rng: np.random.Generator) -> np.ndarray:
  dark, light = np.array([70, 45, 30]), np.array([245, 210, 180])
  return np.clip(dark + rng.random() * (light - dark) + rng.normal(0, 10, 3),
                 0, 255)


def _hair_colour(rng: np.random.Generator) -> np.ndarray:
  if rng.random() < 0.15:
    return _hsv_colour(rng)
  base = np.array([[20, 15, 10], [60, 40, 25], [110, 75, 40], [190, 160, 100],
                   [160, 160, 160]])[rng.integers(5)]
  return np.clip(base + rng.normal(0, 12, 3), 0, 255)


def _plain_material(c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
  m = np.zeros(len(_MAT))
  m[_M['k']] = m[_M['ginv']] = 0.01
  m[_M['sharp']] = 0.5
  m[_COLOURS] = np.concatenate([c1, c2])
  return m


def _random_material(rng: np.random.Generator, scale: float,
                     colour: np.ndarray | None = None) -> np.ndarray:
  """A random solid, striped, gradient or noisy material.

  Args:
    rng: random source.
    scale: typical size in pixels of what is painted (sets periods).
    colour: main colour, random if None.
  """
  # One draw for all choices: materials are made by the dozen per image.
  u = rng.random(12)
  c1 = _hsv_colour(rng) if colour is None else colour
  kind = _pick(rng, (0.35, 0.25, 0.15, 0.15, 0.1))
  if kind == 0:  # solid, with faint texture
    c2 = c1 + 36 * (u[:3] - 0.5)
  elif u[3] < 0.6:
    c2 = _hsv_colour(rng)
  else:
    c2 = c1 * (0.4 + 1.2 * u[4]) + 30 * (u[:3] - 0.5)
  m = _plain_material(c1, np.clip(c2, 0, 255))
  m[_M['shade']] = 0.45 * u[5]
  noise = _M['w0'] + int(3 * u[6])
  if kind == 0:
    m[noise] = 0.2 + 0.8 * u[7]
  if kind in (1, 4):
    m[_M['ws']] = 1.0 if kind == 1 else 0.5
    period = max(3.0, scale * math.exp(-3.2 + 2.3 * u[7]))
    m[_M['k']] = 2 * math.pi / period
    # Along, across or oblique to the surface's axis.
    m[_M['stripe_angle']] = (0.0, math.pi / 2, math.pi * u[8])[int(3 * u[9])]
    m[_M['sharp']] = (0.5, 3.0, 30.0)[int(3 * u[10])]
  if kind in (2, 4):
    m[_M['wg']] = 1.0 if kind == 2 else 0.5
    m[_M['ginv']] = 1 / (scale * (0.3 + 1.2 * u[11]))
    m[_M['grad_angle']] = 2 * math.pi * u[8]
  if kind == 3:
    m[noise] = 1.0
  return m


def _darker(m: np.ndarray, f: float) -> np.ndarray:
  m = m.copy()
  m[_COLOURS] *= f
  return m


def _surface_rows(mats: np.ndarray, frames: np.ndarray) -> np.ndarray:
  """[N, len(_ROW)] float32 rows of materials [N, M] in frames [N, 5]."""
  ox, oy, ux, uy, half = frames.T
  m = mats.T

  def plane(ka, kb):
    # ka * a + kb * b, with a, b the along/across coordinates, as a plane in
    # image x, y.
    cx = ka * ux - kb * uy
    cy = ka * uy + kb * ux
    return cx, cy, -(cx * ox + cy * oy)

  k, t = m[_M['k']], m[_M['stripe_angle']]
  g, ga = m[_M['ginv']], m[_M['grad_angle']]
  inv_half = np.where(half > 0, 1 / np.maximum(half, 1e-6), 0.0)
  sx, sy, s0 = plane(k * np.cos(t), k * np.sin(t))
  gx, gy, g0 = plane(g * np.cos(ga), g * np.sin(ga))
  hx, hy, h0 = plane(0.0, inv_half)
  rest = [m[_M[c]] for c in _ROW[9:]]
  return np.stack([sx, sy, s0, gx, gy, g0 + 0.5, hx, hy, h0, *rest],
                  -1).astype(np.float32)


def _person_materials(rng: np.random.Generator, height: float,
                      uniform_prob: float) -> tuple[np.ndarray, bool]:
  """[NUM_PRIMITIVES, M] materials of one person; whether to outline them."""
  scale = 0.25 * height
  mats = np.empty((_NUM_PRIMITIVES, len(_MAT)))
  if rng.random() < uniform_prob:
    # One material everywhere: only shape and context tell the parts apart.
    m = _random_material(rng, scale)
    mats[:] = m
    # Eyes and nose must stand out on dark materials too.
    dark = m[_COLOURS][:3].mean() < 90
    eye = m.copy()
    eye[_COLOURS] = 0.3 * m[_COLOURS] + (170 if dark else 0)
    mats[[_P['left_eye'], _P['right_eye']]] = eye
    mats[_P['nose']] = _darker(m, 1.5 if dark else 0.75)
  else:
    skin = _random_material(rng, scale, _skin_colour(rng))
    skin[[_M['ws'], _M['wg']]] = 0.0
    hair = skin.copy()
    hair[_COLOURS] = np.concatenate([_hair_colour(rng),
                                     0.8 * _hair_colour(rng)])
    if rng.random() < 0.7:
      shirt, pants = (_random_material(rng, scale) for _ in range(2))
      shoes = _random_material(rng, scale, _hsv_colour(rng, val=(0.05, 0.5)))
      by_part = dict(torso=shirt, neck=skin, upper_arm=shirt,
                     lower_arm=shirt if rng.random() < 0.6 else skin,
                     hand=skin, upper_leg=pants,
                     lower_leg=pants if rng.random() < 0.75 else skin,
                     foot=shoes)
    else:
      by_part = {k: _random_material(rng, scale) for k in _PART_OF_PRIMITIVE}
    for k, name in enumerate(PRIMITIVES):
      mats[k] = by_part.get(name.removeprefix('left_').removeprefix('right_'),
                            skin)
    mats[_P['skull']] = hair if rng.random() < 0.8 else skin
    mats[[_P['left_eye'], _P['right_eye']]] = _plain_material(
        np.full(3, rng.uniform(5, 60)), np.full(3, rng.uniform(5, 60)))
    mats[_P['nose']] = _darker(skin, 0.8)
  mats[[_P['left_eye'], _P['right_eye'], _P['nose']], _M['shade']] = 0.0
  return mats, rng.random() < 0.25


class _Workspace:
  """Scratch images reused between samples of one size, one per thread.

  Fresh multi-megabyte temporaries cost more in page faults than the
  arithmetic on them; the buffers never carry anything between samples.
  """

  def __init__(self, h: int, w: int):
    self.planes = np.empty((len(_ROW), h, w), np.float32)
    self.tmp = np.empty((3, h, w), np.float32)
    self.fields = np.empty((3, h, w), np.float32)
    self.image = np.empty((h, w, 3), np.float32)
    self.blurred = np.empty((h, w, 3), np.float32)
    self.xs, self.ys = (
        g.astype(np.float32) for g in np.meshgrid(np.arange(w), np.arange(h)))


_THREAD_LOCAL = threading.local()


def _workspace(h: int, w: int) -> _Workspace:
  spaces = getattr(_THREAD_LOCAL, 'spaces', None)
  if spaces is None:
    spaces = _THREAD_LOCAL.spaces = {}
  if (h, w) not in spaces:
    if len(spaces) >= 4:
      spaces.clear()
    spaces[h, w] = _Workspace(h, w)
  return spaces[h, w]


def _noise_fields(rng: np.random.Generator, ws: _Workspace) -> np.ndarray:
  """[3, H, W] smooth noise in [0, 1] at coarse, medium and fine scale."""
  _, h, w = ws.fields.shape
  for i, cell in enumerate((64, 12, 3)):
    small = rng.random((h // cell + 2, w // cell + 2), np.float32)
    cv2.resize(small, (w, h), dst=ws.fields[i],
               interpolation=cv2.INTER_LINEAR)
  return ws.fields


def _paint(surface: np.ndarray, rows: np.ndarray,
           ws: _Workspace) -> np.ndarray:
  """Float RGB image [H, W, 3] (in `ws`) of surface ids and their rows."""
  table = np.zeros((len(_ROW), max(256, len(rows))), np.float32)
  table[:, :len(rows)] = rows.T
  p = dict(zip(_ROW, ws.planes))
  if len(rows) <= 256:
    # cv2.LUT is several times faster than numpy indexing.
    ids = surface.astype(np.uint8)
    for i, plane in enumerate(ws.planes):
      cv2.LUT(ids, table[i], dst=plane)
  else:
    for i, plane in enumerate(ws.planes):
      np.take(table[i], surface, out=plane)
  xs, ys = ws.xs, ws.ys
  a, b, t = ws.tmp

  def plane(name: str, out: np.ndarray) -> np.ndarray:
    # out = px * x + py * y + p0 for the row plane `name`.
    np.multiply(xs, p[name[0] + 'x'], out=out)
    np.multiply(ys, p[name[0] + 'y'], out=b)
    out += b
    out += p[name[0] + '0']
    return out

  stripe = np.sin(plane('s', a), out=a)
  stripe *= p['sharp']
  stripe += 0.5
  np.clip(stripe, 0, 1, out=stripe)
  np.multiply(stripe, p['ws'], out=t)
  grad = np.clip(plane('g', a), 0, 1, out=a)
  grad *= p['wg']
  t += grad
  for i in range(3):
    t += np.multiply(p[f'w{i}'], ws.fields[i], out=a)
  shade = plane('h', a)
  shade *= shade
  np.minimum(shade, 1, out=shade)
  shade *= p['shade']
  np.subtract(1, shade, out=shade)
  for c in 'rgb':
    # Channel c: (c1 + (c2 - c1) t) shade, left in the c2 plane.
    c1, c2 = p[f'{c}1'], p[f'{c}2']
    c2 -= c1
    c2 *= t
    c2 += c1
    c2 *= shade
  return cv2.merge([p['r2'], p['g2'], p['b2']], dst=ws.image)


def _background(rng: np.random.Generator, image_hw: tuple[int, int],
                person_mats: np.ndarray, mean_height: float,
                max_clutter: int) -> tuple[np.ndarray, np.ndarray]:
  """Background surface ids (uint8 [H, W]) and their rows."""
  h, w = image_hw
  size = float(max(h, w))
  mats, frames, polys = [], [], []
  # Sticks are outlined together at the end; polys[i] is then an index.
  sticks = []

  def random_axis() -> np.ndarray:
    a = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(a), math.sin(a)])

  def stick(centre: np.ndarray, length: float, radius: float) -> np.ndarray:
    """Adds a limb-like tapered stick; returns its frame."""
    u = random_axis()
    a = centre - u * length / 2
    sticks.append((*a, *(a + u * length), radius,
                   radius * rng.uniform(0.6, 1.0)))
    polys.append(len(sticks) - 1)
    return np.array([*a, *u, radius])

  mats.append(_random_material(rng, size))
  frames.append((w / 2, h / 2, *random_axis(), 0))
  polys.append(None)
  if rng.random() < 0.5:
    # A second region (wall and floor, sky and ground, ...).
    axis = random_axis()
    normal = np.array([-axis[1], axis[0]])
    p0 = np.array([w / 2, h / 2]) + rng.uniform(-0.4, 0.4) * size * normal
    big = 3 * size
    mats.append(_random_material(rng, size))
    frames.append((*p0, *axis, 0))
    polys.append(np.array([p0 - big * axis, p0 + big * axis,
                           p0 + big * axis + big * normal,
                           p0 - big * axis + big * normal]))
  # Ids must fit in 8 bits; a bent stick takes two.
  for _ in range(min(rng.integers(3, max_clutter + 1), 120)):
    c = rng.uniform((0, 0), (w, h))
    kind = _pick(rng, (0.2, 0.2, 0.15, 0.15, 0.2, 0.1))
    if kind >= 4 and len(person_mats):
      # Distractors in a person's own material: limb-like sticks and blobs.
      mat = person_mats[rng.integers(len(person_mats))]
      scale = mean_height * rng.uniform(0.6, 1.4)
    else:
      scale = size * math.exp(rng.uniform(-3.2, -0.9))
      mat = _random_material(rng, scale)
    axis = random_axis()
    if kind == 0:  # rectangle
      n = np.array([-axis[1], axis[0]])
      a, b = scale * rng.uniform(0.2, 1.0, 2)
      polys.append(np.array([c - a * axis - b * n, c + a * axis - b * n,
                             c + a * axis + b * n, c - a * axis + b * n]))
      frames.append((*c, *axis, 0))
    elif kind == 1:
      polys.append(_ellipse(c, _axes(axis, scale * rng.uniform(0.2, 0.8),
                                     scale * rng.uniform(0.1, 0.6))))
      frames.append((*c, *axis, 0))
    elif kind == 2:
      polys.append(cv2.convexHull(
          (c + scale * rng.uniform(-0.5, 0.5, (7, 2))).astype(np.float32)
      )[:, 0])
      frames.append((*c, *axis, 0))
    elif kind == 3:  # line
      frames.append(stick(c, scale * rng.uniform(1, 3), rng.uniform(0.6, 3)))
    elif kind == 4:
      frame = stick(c, scale * rng.uniform(0.12, 0.3),
                    scale * rng.uniform(0.02, 0.06))
      frames.append(frame)
      if rng.random() < 0.5:
        # A bent "arm" of two sticks.
        mats.append(mat)
        tip = frame[:2] + frame[2:4] * scale * rng.uniform(0.12, 0.3)
        frames.append(stick(tip, scale * rng.uniform(0.12, 0.3), frame[4]))
    else:
      half = scale * rng.uniform(0.03, 0.08)
      polys.append(_ellipse(c, _axes(axis, half * rng.uniform(1, 3), half)))
      frames.append((*c, *axis, half))
    mats.append(mat)

  if sticks:
    s = np.array(sticks)
    stick_polys = _to_fixed(_segment_outlines(0, s[:, 0:2], s[:, 2:4],
                                              s[:, 4], s[:, 5]))
  surface = np.zeros(image_hw, np.uint8)
  for i, poly in enumerate(polys):
    if poly is not None:
      poly = stick_polys[poly] if isinstance(poly, int) else _to_fixed(poly)
      cv2.fillPoly(surface, [poly], i, cv2.LINE_8, _SHIFT)
  return surface, _surface_rows(np.array(mats), np.array(frames, float))


@functools.lru_cache(maxsize=1)
def _sensor_noise_tile() -> np.ndarray:
  """Fixed pixel noise; random crops of it are cheaper than fresh noise."""
  return np.random.default_rng(12345).normal(0, 1, (512, 512, 3)).astype(
      np.float32)


def _render_pixels(rng: np.random.Generator, scene: Scene,
                   cfg: _Config) -> np.ndarray:
  """The RGB image of a scene."""
  h, w = cfg.image_hw
  n = len(scene.heights)
  ws = _workspace(h, w)
  _noise_fields(rng, ws)

  num_ids = _FIRST_PERSON_ID + n * _NUM_PRIMITIVES
  mats = np.zeros((num_ids, len(_MAT)))
  frames = np.zeros((num_ids, 5))
  outlined = np.zeros(num_ids, bool)
  for p in range(n):
    base = _FIRST_PERSON_ID + p * _NUM_PRIMITIVES
    mats[base:base + _NUM_PRIMITIVES], outlined[
        base:base + _NUM_PRIMITIVES] = _person_materials(
            rng, float(scene.heights[p]), cfg.uniform_colour_prob)
  frames[_FIRST_PERSON_ID:] = scene.frames.reshape(-1, 5)
  for i in range(scene.num_occluders):
    mats[1 + i] = _random_material(rng, 0.3 * min(h, w))
    frames[1 + i] = (w / 2, h / 2, 1.0, 0.0, 0.0)
  # Distractors copy the people's main materials.
  clothes = mats[_FIRST_PERSON_ID:].reshape(n, _NUM_PRIMITIVES, len(_MAT))[
      :, [_P['torso'], _P['left_lower_arm'], _P['right_upper_leg']]].reshape(
          -1, len(_MAT))
  mean_height = float(scene.heights.mean()) if n else 0.5 * h
  bg, bg_rows = _background(rng, cfg.image_hw, clothes, mean_height,
                            cfg.max_clutter)
  rows = np.concatenate([bg_rows, _surface_rows(mats, frames)])
  # Camera white balance: the image is linear in the colours.
  rows[:, _ROW.index('r1'):] *= np.tile(rng.uniform(0.85, 1.15, 3), 2)
  surface = np.where(scene.owner > 0, scene.owner + np.uint16(len(bg_rows)),
                     bg)
  image = _paint(surface, rows, ws)

  if outlined.any():
    o = scene.owner
    edge = np.zeros(o.shape, bool)
    dx = o[:, 1:] != o[:, :-1]
    dy = o[1:] != o[:-1]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:] |= dy
    edge[:-1] |= dy
    image[edge & outlined[o]] *= 0.4

  # Camera blur and sensor noise.
  if rng.random() < 0.6:
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.1),
                             dst=ws.blurred)
  tile = _sensor_noise_tile()
  reps = (-(-h // tile.shape[0]), -(-w // tile.shape[1]), 1)
  if reps != (1, 1, 1):
    tile = np.tile(tile, reps)
  y0 = rng.integers(tile.shape[0] - h + 1)
  x0 = rng.integers(tile.shape[1] - w + 1)
  cv2.scaleAdd(tile[y0:y0 + h, x0:x0 + w], rng.uniform(0, 8), image,
               dst=image)
  image += 0.5  # rounds in the conversion below
  np.clip(image, 0, 255, out=image)
  return image.astype(np.uint8)


class SyntheticPeople(example_lib.ImageDataset):
  """Procedurally drawn people with keypoints, masks and part maps.

  See the module docstring for what is drawn and the visibility rule.
  """
  name = 'synthetic'
  skeleton = skeletons.COCO17
  part_schema = skeletons.BODY_PARTS6
  has_masks = True

  def __init__(self, num_images: int, seed: int = 0,
               image_size: tuple[int, int] = (256, 256),
               min_people: int = 1, max_people: int = 3,
               person_height: tuple[float, float] = (0.25, 1.0),
               occluder_prob: float = 0.25,
               min_visible_fraction: float = 0.005,
               uniform_colour_prob: float = 0.5,
               max_clutter: int = 20):
    """Builds the dataset.

    Args:
      num_images: number of samples.
      seed: the samples are a function of (seed, index).
      image_size: (height, width) in pixels.
      min_people: fewest people per image (0 allows empty images).
      max_people: most people per image.
      person_height: range of standing heights as fractions of the image
        height (sampled log-uniformly; poses such as crouching are smaller).
      occluder_prob: chance that an image has objects in front of people.
      min_visible_fraction: people with fewer visible pixels (as a fraction
        of the image) are dropped, so that each listed person is really seen.
      uniform_colour_prob: chance that a person wears one material on all
        parts (otherwise skin, hair and clothes, or a patchwork).
      max_clutter: most clutter shapes in the background.
    """
    if num_images < 0:
      raise ValueError(f'num_images must be >= 0, got {num_images}')
    if not 0 <= min_people <= max_people:
      raise ValueError(f'need 0 <= min_people <= max_people, got '
                       f'{min_people}, {max_people}')
    if len(image_size) != 2 or min(image_size) < 8:
      raise ValueError(f'image_size must be (height, width) >= 8, got '
                       f'{image_size}')
    if not 0 < person_height[0] <= person_height[1]:
      raise ValueError(f'bad person_height {person_height}')
    self._num_images = int(num_images)
    self._seed = int(seed)
    self._cfg = _Config(
        image_hw=(int(image_size[0]), int(image_size[1])),
        min_people=int(min_people), max_people=int(max_people),
        height_range=(float(person_height[0]), float(person_height[1])),
        occluder_prob=float(occluder_prob),
        min_visible_fraction=float(min_visible_fraction),
        uniform_colour_prob=float(uniform_colour_prob),
        max_clutter=max(3, int(max_clutter)))
    # The scene of the last index: `__getitem__` asks for the annotation and
    # then the pixels of the same index.
    self._cache: tuple[int, Scene] | None = None

  def __len__(self) -> int:
    return self._num_images

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state['_cache'] = None
    return state

  def _rng(self, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng((self._seed, index, stream))

  def scene(self, index: int) -> Scene:
    """The geometry of sample `index` (owner map, masks, visibility).

    For tests and debugging; the result is cached, so do not modify it.
    """
    cached = self._cache
    if cached is not None and cached[0] == index:
      return cached[1]
    scene = _make_scene(self._rng(index, 0), self._cfg)
    self._cache = (index, scene)
    return scene

  def annotation(self, index: int) -> example_lib.Example:
    scene = self.scene(index)
    h, w = self._cfg.image_hw
    ann = {k: v.copy() for k, v in scene.annotation.items()}
    return dict(image_id=index + 1, image_path='', height=h, width=w, **ann)

  def load_pixels(self, index: int,
                  annotation: example_lib.Example) -> example_lib.Example:
    del annotation  # Everything follows from the index.
    scene = self.scene(index)
    image = _render_pixels(self._rng(index, 1), scene, self._cfg)
    return dict(image=image, person_masks=scene.person_masks.copy(),
                part_map=scene.part_map.copy())


# ---------------------------------------------------------------------------
# COCO export.


def export(output_dir: str, num_images: int, seed: int = 0,
           jpeg_quality: int = 95, **dataset_kwargs) -> str:
  """Writes a COCO-format folder of `SyntheticPeople`; returns the JSON path.

  Layout: ``images/<12-digit id>.jpg``, ``parts/<12-digit id>.png`` (uint8
  part labels) and ``annotations.json``. The same arguments give
  byte-identical files.

  Args:
    output_dir: folder to create or overwrite files in.
    num_images: number of images.
    seed: dataset seed.
    jpeg_quality: OpenCV JPEG quality.
    **dataset_kwargs: further `SyntheticPeople` arguments.
  """
  dataset = SyntheticPeople(num_images, seed=seed, **dataset_kwargs)
  for sub in ('images', 'parts'):
    os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
  images, annotations = [], []
  for i in range(len(dataset)):
    ex = dataset[i]
    stem = f'{ex["image_id"]:012d}'
    jpg = os.path.join(output_dir, 'images', stem + '.jpg')
    png = os.path.join(output_dir, 'parts', stem + '.png')
    ok = cv2.imwrite(jpg, cv2.cvtColor(ex['image'], cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok or not cv2.imwrite(png, ex['part_map']):
      raise OSError(f'could not write {jpg} or {png}')
    images.append(coco_format.coco_image_entry(ex, stem + '.jpg'))
    annotations += coco_format.coco_annotation_entries(
        ex, len(annotations) + 1)
  coco = dict(
      info=dict(description='hpe_jax synthetic people', seed=int(seed)),
      images=images, annotations=annotations,
      categories=coco_format.coco_categories(dataset.skeleton))
  path = os.path.join(output_dir, 'annotations.json')
  with open(path, 'w') as f:
    json.dump(coco, f, separators=(',', ':'))
  return path


def _define_flags() -> None:
  # Only when run as a program, so that importing the module never clashes
  # with a trainer's own --seed or --output.
  flags.DEFINE_string('output', None, 'Folder to write.', required=True)
  flags.DEFINE_integer('num_images', 1000, 'Number of images.')
  flags.DEFINE_integer('seed', 0, 'Dataset seed.')
  flags.DEFINE_list('image_size', ['256', '256'], 'height,width in pixels.')
  flags.DEFINE_integer('min_people', 1, 'Fewest people per image.')
  flags.DEFINE_integer('max_people', 3, 'Most people per image.')
  flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality.')


def _main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  height, width = (int(v) for v in f.image_size)
  path = export(f.output, f.num_images, seed=f.seed, image_size=(height, width),
                min_people=f.min_people, max_people=f.max_people,
                jpeg_quality=f.jpeg_quality)
  print(f'wrote {f.num_images} images and {path}')


if __name__ == '__main__':
  _define_flags()
  app.run(_main)
