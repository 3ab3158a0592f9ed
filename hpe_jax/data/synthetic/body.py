"""The body model: segments, joints and the sampling of posed people.

A person is 21 segments (`PRIMITIVES`) posed in 3-D with joint limits, seen
from a random view and outlined as 2-D polygons in painter's order, ready for
`render` to rasterise. The package docstring describes the figures.

`sample_pose` makes every random choice of a person (`PoseParams`) and
`pose_person` draws from them without randomness, so that a video can move
a person by changing parameters over time; `sample_person` is the two in
one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np

from hpe_jax.data import skeletons
from hpe_jax.data.synthetic import shapes

# Segments of one person, each drawn as one polygon and owning its pixels.
PRIMITIVES = (
    'torso', 'neck', 'skull', 'face', 'left_ear', 'right_ear', 'left_eye',
    'right_eye', 'nose', 'left_upper_arm', 'left_lower_arm', 'left_hand',
    'right_upper_arm', 'right_lower_arm', 'right_hand', 'left_upper_leg',
    'left_lower_leg', 'left_foot', 'right_upper_leg', 'right_lower_leg',
    'right_foot')
PRIMITIVE_INDEX = {name: k for k, name in enumerate(PRIMITIVES)}
NUM_PRIMITIVES = len(PRIMITIVES)
_HEAD_PRIMITIVES = ('skull', 'face', 'left_ear', 'right_ear', 'left_eye',
                    'right_eye', 'nose')

PART_OF_PRIMITIVE = {
    'torso': 'torso', 'neck': 'torso', 'upper_arm': 'upper_arms',
    'lower_arm': 'lower_arms', 'hand': 'lower_arms', 'upper_leg': 'upper_legs',
    'lower_leg': 'lower_legs', 'foot': 'lower_legs'}


def _primitive_part(name: str) -> int:
  if name in _HEAD_PRIMITIVES:
    return skeletons.BODY_PARTS6.label_names.index('head')
  base = name.removeprefix('left_').removeprefix('right_')
  return skeletons.BODY_PARTS6.label_names.index(PART_OF_PRIMITIVE[base])


PRIMITIVE_PART = np.array([_primitive_part(n) for n in PRIMITIVES], np.uint8)


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
JOINT_OWNERS = np.array(
    [[p in joint_primitives(j) for p in PRIMITIVES]
     for j in skeletons.COCO17.joint_names], bool)

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


@dataclasses.dataclass
class Person:
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


@dataclasses.dataclass
class ArmPose:
  """A left arm's joint angles in degrees (a right arm is its mirror image)."""
  # Raised from hanging down in a plane turned from sideways (0) to forwards
  # (90) and across the chest (> 90) or slightly backwards (< 0, where the
  # elevation is capped at 60); a negative elevation swings the arm back.
  elevation: float
  azimuth: float
  flexion: float  # elbow
  twist: float    # of the upper arm, turning the elbow's plane
  hand: np.ndarray  # [3] the hand's deviation from the forearm


@dataclasses.dataclass
class LegPose:
  """A left leg's joint angles in degrees (a right leg is its mirror image)."""
  flexion: float    # thigh forwards
  abduction: float  # thigh sideways
  knee: float
  knee_twist: float
  foot: float       # foot turned about the shank


def _sample_arm(rng: np.random.Generator) -> ArmPose:
  elevation = rng.uniform(0, 45) if rng.random() < 0.55 else rng.uniform(0, 170)
  azimuth = rng.uniform(-35, 125)
  flexion = (rng.uniform(0, 20) if rng.random() < 0.4 else
             rng.uniform(0, 150))
  twist = min(max(rng.normal(0, 35), -80), 80)
  return ArmPose(elevation=elevation, azimuth=azimuth, flexion=flexion,
                 twist=twist, hand=rng.normal(size=3))


def _arm_directions(arm: ArmPose):
  """Unit directions of upper arm, forearm and hand of a left arm."""
  deg = math.radians
  elevation = arm.elevation
  if arm.azimuth < 0:
    elevation = min(elevation, 60)
  el, az = deg(elevation), deg(arm.azimuth)
  upper = np.array([math.cos(az) * math.sin(el), math.cos(el),
                    -math.sin(az) * math.sin(el)])
  flexion = deg(arm.flexion)
  # Flexion brings the forearm forwards for a hanging arm; rotating the
  # upper arm (twist) turns that plane inwards or outwards.
  bend = _bend_direction(upper, (0, -0.3, -1), (0, -1, 0))
  bend = _rotate_about(bend, upper, deg(arm.twist))
  fore = math.cos(flexion) * upper + math.sin(flexion) * bend
  hand = _unit(fore + 0.35 * arm.hand)
  return upper, fore, hand


def _sample_leg(rng: np.random.Generator) -> LegPose:
  if rng.random() < 0.5:
    flexion, abduction = rng.uniform(-15, 25), rng.uniform(-5, 20)
    knee = rng.uniform(0, 25)
  else:
    flexion, abduction = rng.uniform(-35, 115), rng.uniform(-10, 45)
    knee = rng.uniform(0, 145)
  return LegPose(flexion=flexion, abduction=abduction, knee=knee,
                 knee_twist=rng.normal(0, 8), foot=rng.uniform(-10, 35))


def _leg_directions(leg: LegPose):
  """Unit directions of thigh, shank and foot of a left leg."""
  deg = math.radians
  fl, ab, knee = deg(leg.flexion), deg(leg.abduction), deg(leg.knee)
  thigh = np.array([math.sin(ab), math.cos(ab) * math.cos(fl),
                    -math.cos(ab) * math.sin(fl)])
  # Knees bend backwards; for a thigh raised forwards that means downwards.
  bend = _bend_direction(thigh, (0, 0.35, 1), (0, 1, 0))
  bend = _rotate_about(bend, thigh, deg(leg.knee_twist))
  shank = math.cos(knee) * thigh + math.sin(knee) * bend
  foot = _bend_direction(shank, (0, 0, -1), (0, 1, 0))
  foot = _rotate_about(foot, shank, deg(leg.foot))
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
_LIMB_PRIMS = np.array([PRIMITIVE_INDEX[n] for n, _, _ in _LIMBS])
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


@dataclasses.dataclass
class PoseParams:
  """Every random choice behind one person; `pose_person` draws from it.

  Angles are in degrees. `sample_pose` fills it in the order of the random
  draws; a video changes some fields over time and poses each frame.
  """
  thickness: float
  # Leg, arm and torso length, head size, shoulder and hip width, as factors.
  proportions: np.ndarray
  lean: float       # torso forwards
  side_bend: float
  twist: float      # shoulders turned on the hips
  girth: np.ndarray  # [3] chest, waist and pelvis, before the thickness
  neck_roll: float
  neck_pitch: float
  yaw: float        # head turned on the neck
  arms: tuple[ArmPose, ArmPose]  # left, right
  legs: tuple[LegPose, LegPose]
  view: float       # 0 frontal, 180 from behind, -90 facing image right
  camera_tilt: float
  height: float     # standing height in pixels
  roll: float       # in the image plane
  stretch: float    # width factor
  # Unit draws placing the figure in the image (`pelvis` None).
  shift_u: np.ndarray
  radius_jitter: np.ndarray  # [len(_LIMBS), 1] limb radius factors
  outline_style: int  # `shapes.segment_outlines` style
  face_cap: float   # half-angle of the face region
  # Where the pelvis goes in the image (x, y), instead of `shift_u`'s place.
  pelvis: np.ndarray | None = None


def sample_pose(rng: np.random.Generator, image_hw: tuple[int, int],
                height_range: tuple[float, float]) -> PoseParams:
  """The random choices of one person at a random place and size."""
  img_h = image_hw[0]
  thick = rng.uniform(0.75, 1.45)
  proportions = rng.uniform(
      (0.92, 0.92, 0.9, 0.88, 0.88, 0.85), (1.08, 1.08, 1.1, 1.15, 1.15, 1.2))
  if rng.random() < 0.85:
    lean = min(max(rng.normal(5, 10), -20), 50)
  else:
    lean = rng.uniform(-20, 80)
  side_bend = rng.normal(0, 6)
  twist = rng.normal(0, 12)
  girth = rng.uniform(0.9, 1.15, 3)
  neck_roll = rng.normal(0, 8)
  neck_pitch = min(max(rng.normal(0, 12), -30), 40)
  yaw = rng.normal(0, 20) if rng.random() < 0.6 else rng.uniform(-80, 80)
  arms, legs = [], []
  for _ in range(2):
    arms.append(_sample_arm(rng))
    legs.append(_sample_leg(rng))
  # View: mostly frontal, some from behind, the rest anywhere; the camera is
  # a little above or below.
  u = rng.random()
  view = (rng.normal(0, 25) if u < 0.55 else
          rng.normal(180, 25) if u < 0.65 else rng.uniform(-180, 180))
  camera_tilt = rng.normal(0, 8)
  # In the image: size, in-plane rotation (mostly near upright), stretch.
  height = img_h * math.exp(rng.uniform(math.log(height_range[0]),
                                        math.log(height_range[1])))
  u = rng.random()
  roll = (rng.normal(0, 7) if u < 0.65 else
          rng.uniform(-40, 40) if u < 0.93 else rng.uniform(-180, 180))
  stretch = math.exp(rng.normal(0, 0.08))
  # The placement's bounds depend on the posed extent: keep the unit draws
  # (Generator.uniform is low + (high - low) * random()).
  shift_u = rng.random(2)
  radius_jitter = rng.uniform(0.9, 1.1, (len(_LIMBS), 1))
  outline_style = shapes.pick(rng, (0.6, 0.2, 0.2))
  face_cap = rng.uniform(50, 72)
  return PoseParams(
      thickness=thick, proportions=proportions, lean=lean,
      side_bend=side_bend, twist=twist, girth=girth, neck_roll=neck_roll,
      neck_pitch=neck_pitch, yaw=yaw, arms=tuple(arms), legs=tuple(legs),
      view=view, camera_tilt=camera_tilt, height=height, roll=roll,
      stretch=stretch, shift_u=shift_u, radius_jitter=radius_jitter,
      outline_style=outline_style, face_cap=face_cap)


def sample_person(rng: np.random.Generator, image_hw: tuple[int, int],
                  height_range: tuple[float, float]) -> Person:
  """Poses, projects and outlines one person at a random place and size."""
  return pose_person(sample_pose(rng, image_hw, height_range), image_hw)


def pose_person(params: PoseParams, image_hw: tuple[int, int]) -> Person:
  """Poses, projects and outlines the person `params` describes."""
  img_h, img_w = image_hw
  deg = math.radians

  # Proportions, in units of standing height.
  thick = params.thickness
  leg_len, arm_len, torso_len, head_size, shoulder_w, hip_w = (
      params.proportions)
  torso_len *= 0.29
  head_r = np.array([0.047, 0.064, 0.058]) * head_size
  shoulder_hw = 0.1 * shoulder_w * thick ** 0.3
  hip_hw = 0.055 * hip_w * thick ** 0.3

  # Body frame: x = the person's left, y = down, z = backwards, origin at the
  # pelvis. Torso pose: forward lean, side bend, shoulders twisted on hips.
  torso_rot = _rot_z(deg(params.side_bend)) @ _rot_x(deg(params.lean))
  shoulder_rot = torso_rot @ _rot_y(deg(params.twist))
  shoulder_c = torso_rot @ np.array([0, -torso_len, 0])
  side = np.array([1.0, -1.0])[:, None]
  shoulders = shoulder_c + side * shoulder_rot[:, 0] * shoulder_hw
  hips = side * torso_rot[:, 0] * hip_hw

  # The torso is the hull of elliptical cross-sections.
  chest, waist, pelvis = params.girth * thick ** 0.6
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

  neck_rot = (torso_rot @ _rot_z(deg(params.neck_roll)) @
              _rot_x(deg(params.neck_pitch)))
  head_c = shoulder_c + neck_rot @ [0, -0.045 - 0.85 * head_r[1], 0]
  head_rot = neck_rot @ _rot_y(deg(params.yaw))
  face_pts = head_c + (_FACE_DIRECTIONS * head_r) @ head_rot.T

  arm_pts, leg_pts = [], []
  for s, flip in enumerate((np.ones(3), np.array([-1.0, 1.0, 1.0]))):
    up, fore, hand = (flip * d for d in _arm_directions(params.arms[s]))
    elbow = shoulders[s] + 0.17 * arm_len * up
    wrist = elbow + 0.145 * arm_len * fore
    arm_pts.append([elbow, wrist, wrist + 0.065 * hand])
    thigh, shank, foot = (flip * d for d in _leg_directions(params.legs[s]))
    knee = hips[s] + 0.245 * leg_len * thigh
    ankle = knee + 0.235 * leg_len * shank
    leg_pts.append([knee, ankle, ankle + 0.02 * shank - 0.03 * foot,
                    ankle + 0.025 * shank + 0.1 * foot])
  arm_pts = np.array(arm_pts)  # [side, (elbow, wrist, hand tip), 3]
  leg_pts = np.array(leg_pts)  # [side, (knee, ankle, heel, toe), 3]

  cam = _rot_x(deg(params.camera_tilt)) @ _rot_y(deg(params.view))

  # In the image: size, stretch, in-plane rotation.
  height = params.height
  roll = deg(params.roll)
  to_image = height * np.array(
      [[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]]
  ) @ np.diag([params.stretch, 1.0])
  lin = to_image @ cam[:2]  # body frame -> pixels, up to a shift
  depth_axis = cam[2]

  joints3 = np.concatenate([
      face_pts, shoulders, arm_pts[:, 0], arm_pts[:, 1], hips, leg_pts[:, 0],
      leg_pts[:, 1]])
  if params.pelvis is not None:
    # The pelvis is the body frame's origin.
    shift = np.asarray(params.pelvis, float)
  else:
    extent = np.concatenate([joints3, arm_pts[:, 2], leg_pts[:, 3],
                             [head_c - [0, head_r[1], 0]]]) @ lin.T
    lo, hi = extent.min(0), extent.max(0)
    # Centre the figure so that a part of it may leave the image.
    slack = (hi - lo) * [0.3, 0.15]
    a = (hi - lo) / 2 - slack
    b = np.array([img_w, img_h]) - (hi - lo) / 2 + slack
    low, high = np.minimum(a, b), np.maximum(a, b)
    shift = low + (high - low) * params.shift_u - (lo + hi) / 2

  def px(p: np.ndarray) -> np.ndarray:
    return p @ lin.T + shift

  keypoints = np.round(px(joints3) * shapes.SUBPIXEL) / shapes.SUBPIXEL

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
  radii = np.maximum(_LIMB_RADII * height * thick * params.radius_jitter,
                     1.2)
  a2, b2 = px(starts), px(ends)
  limb_polys = shapes.to_fixed(shapes.segment_outlines(
      params.outline_style, a2, b2, radii[:, 0], radii[:, 1]))
  limb_depth = (starts + ends) @ depth_axis / 2
  axis = b2 - a2
  axis /= np.maximum(np.hypot(axis[:, 0], axis[:, 1]), 1e-6)[:, None]
  frames = np.zeros((NUM_PRIMITIVES, 5))
  frames[_LIMB_PRIMS] = np.concatenate([a2, axis, radii.max(1)[:, None]], 1)

  pelvis_px, shoulder_px = px(np.zeros(3)), px(shoulder_c)
  spine = _unit(shoulder_px - pelvis_px)
  torso_poly = cv2.convexHull(px(torso_pts).astype(np.float32))[:, 0]
  torso_half = 0.5 * float(np.ptp(
      (torso_poly - pelvis_px) @ np.array([-spine[1], spine[0]])))
  frames[PRIMITIVE_INDEX['torso']] = (*pelvis_px, *spine, max(torso_half, 1.0))
  torso_depth = float((shoulder_c @ depth_axis) / 2)

  # The head's outline is the projection of its ellipsoid.
  head_px = px(head_c)
  proj = lin @ head_rot @ np.diag(head_r)
  chol = np.linalg.cholesky(proj @ proj.T + 1e-9 * np.eye(2))
  skull = shapes.ellipse(head_px, chol)
  r = max(head_r[0] * height, 1.0)
  head_up = lin @ head_rot @ [0, -1.0, 0]
  head_up = (_unit(head_up) if head_up @ head_up > (0.2 * height) ** 2
             else _unit(lin @ [0, -1.0, 0]))
  frames[[PRIMITIVE_INDEX[n] for n in _HEAD_PRIMITIVES]] = (
      *head_px, *(-head_up), r)
  # The neck leads the head's group so that the head always covers it.
  head = [(PRIMITIVE_INDEX['neck'], limb_polys[-1]),
          (PRIMITIVE_INDEX['skull'], shapes.to_fixed(skull))]
  # Face: the visible part of a cap around the front-lower direction.
  cap = _face_cap(deg(params.face_cap))
  front = (cap @ (cam @ head_rot).T)[:, 2] < 0
  if front.sum() >= 3:
    cap_px = px(head_c + (cap[front] * head_r) @ head_rot.T)
    head.append((PRIMITIVE_INDEX['face'], shapes.to_fixed(
        cv2.convexHull(cap_px.astype(np.float32))[:, 0])))
  for j, name, along, across in _FEATURES:
    if not turned_away[j]:
      head.append((PRIMITIVE_INDEX[name], shapes.to_fixed(shapes.ellipse(
          keypoints[j], shapes.ellipse_axes(
              head_up, max(along * head_r[1] * height, 0.7),
              max(across * head_r[0] * height, 0.7))))))

  # Painter's order: torso, head (always in front of the torso) and limb
  # groups sorted far to near; at equal depth limbs go over the torso.
  groups = [(torso_depth + 0.02,
             [(PRIMITIVE_INDEX['torso'], shapes.to_fixed(torso_poly))]),
            (min(float(head_c @ depth_axis) - 0.03, torso_depth), head)]
  for g, d in zip(_LIMB_GROUPS, _LIMB_GROUP_MEAN @ limb_depth):
    groups.append((d, [(int(_LIMB_PRIMS[i]), limb_polys[i]) for i in g]))
  groups.sort(key=lambda g: -g[0])
  polygons = [item for _, group in groups for item in group]

  everything = np.concatenate([p for _, p in polygons]) / shapes.SUBPIXEL
  head_pts = np.concatenate(
      [p for k, p in head if k != PRIMITIVE_INDEX['neck']]) / shapes.SUBPIXEL
  # Index coordinates to pixel edges: pixel j spans [j, j + 1].
  head_box = np.concatenate([head_pts.min(0), head_pts.max(0)]) + 0.5
  return Person(
      keypoints=keypoints, turned_away=turned_away, polygons=polygons,
      frames=frames, head_box=head_box,
      box=np.concatenate([everything.min(0), everything.max(0)]),
      height=height)
