"""Synthetic video: the synthetic people moving, with per-frame ground truth.

`SyntheticVideo` draws sequences for the tracking code without a download:
people walk in from outside the image, across it and out again, or stand,
turn round and move their arms; objects pass in front of them; the camera
pans and zooms; frames may be dropped. Every frame comes with the still
images' ground truth (keypoints with visibility, boxes, head boxes, person
masks, the six-part map) and a track id per person that stays the same for
the whole sequence.

How a sequence is made. Each person has a base pose (`body.sample_pose`,
made upright and calm) and smooth functions of time changing some of its
parameters: walkers swing thighs and arms in antiphase with a knee bend in
the swing phase, at a step rate that matches their speed across the image
(the feet hardly slide), facing where they go; standers turn (the view
drifts through smoothstep key values) and raise and bend their arms.
Everything is posed in a *world* canvas 40 % larger than the frame and the
frame is cut out of it by a similarity transform (pan and zoom, smooth
sinusoids; ``camera`` in each frame), the image with bilinear and the owner
map with nearest-neighbour interpolation; keypoints and head boxes go
through the same transform. Masks, the part map, boxes and visibility are
then read off the frame's owner map exactly as for still images
(`render.finish_scene`), so they agree with the pixels; joints outside the
frame are 0. The materials of people, occluders and background are drawn
once per sequence, and textures (stripes, gradients, noise, shading) follow
their surfaces, so that a moving limb keeps its texture; only sensor noise
changes from frame to frame.

A sequence is a pure function of its arguments: the world from
``default_rng((seed, index, 2))`` (people, occluders) and ``(seed, index,
3)`` (colours), the camera from ``(seed, index, 4)`` and the sensor noise of
frame ``t`` from ``(seed, index, 5, t)``. So pan and zoom leave the world
unchanged, a dropped frame leaves the others unchanged, and any frame can
be drawn on its own.

`export` writes a sequence as JPEG frames (or an MP4) plus a PoseTrack
2018-style ``posetrack.json``; run as a program::

  python -m hpe_jax.data.synthetic.video --output=DIR --num_frames=60 \\
      --seed=0 --num_videos=1 --drop=10,11,12 --format=frames \\
      --image_size=192,256
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterable, Sequence

from absl import flags
import cv2
import numpy as np

from hpe_jax import errors
from hpe_jax.data import coco
from hpe_jax.data import skeletons
from hpe_jax.data import video as video_io
from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import pixels
from hpe_jax.data.synthetic import render
from hpe_jax.data.synthetic import scene as scene_lib
from hpe_jax.data.synthetic import shapes
from hpe_jax.ops import affine

# The world canvas exceeds the frame by this fraction on each side.
_MARGIN = 0.2
# PoseTrack image ids hold the frame number in 4 decimal digits.
MAX_FRAMES = 10_000


class _Keys:
  """A smooth function of time: smoothstep between key values."""

  def __init__(self, times: Sequence[float], values: Sequence[float]):
    self.times = np.asarray(times, float)
    self.values = np.asarray(values, float)

  def __call__(self, t: float) -> float:
    i = int(np.searchsorted(self.times, t, side='right')) - 1
    if i < 0:
      return float(self.values[0])
    if i >= len(self.times) - 1:
      return float(self.values[-1])
    u = (t - self.times[i]) / (self.times[i + 1] - self.times[i])
    u = u * u * (3 - 2 * u)
    return float(self.values[i] + (self.values[i + 1] - self.values[i]) * u)


def _random_keys(rng: np.random.Generator, duration: float,
                 draw: Callable[[float | None], float],
                 spacing: tuple[float, float] = (0.8, 2.0)) -> _Keys:
  """Keys `spacing` seconds apart over [0, duration]; `draw(previous)` gives
  each value (previous is None for the first)."""
  t = -rng.uniform(0, spacing[1])
  times, values = [t], [draw(None)]
  while t < duration:
    t += rng.uniform(*spacing)
    times.append(t)
    values.append(draw(values[-1]))
  return _Keys(times, values)


def _clip(x: float, lo: float, hi: float) -> float:
  return min(max(float(x), lo), hi)


@dataclasses.dataclass
class _Gait:
  """A walk cycle: thighs and arms swing in antiphase."""
  phase: float      # at frame 0, radians
  rate: float       # radians per frame
  swing: float      # thigh swing amplitude, degrees
  knee: float       # extra knee bend in the swing phase, degrees
  arm_swing: float  # degrees


@dataclasses.dataclass
class _Actor:
  """One person of a sequence: a base pose and how it changes over time."""
  base: body.PoseParams
  start: np.ndarray     # pelvis at frame 0, world pixels
  velocity: np.ndarray  # pixels per frame
  gait: _Gait | None    # walkers only
  sway: tuple[float, float, float]  # amplitude (px), radians/frame, phase
  curves: dict[str, _Keys]  # over seconds
  depth: float          # larger is nearer
  entry: float          # about when it comes into the frame

  def pose(self, frame: int, fps: float) -> body.PoseParams:
    b = self.base
    c = {k: f(frame / fps) for k, f in self.curves.items()}
    pelvis = self.start + self.velocity * frame
    amplitude, rate, phase = self.sway
    pelvis = pelvis + [amplitude * math.sin(rate * frame + phase), 0.0]
    arms, legs = list(b.arms), list(b.legs)
    twist = b.twist
    g = self.gait
    if g is not None:
      ph = g.phase + g.rate * frame
      # Highest when the legs pass each other.
      pelvis = pelvis - [0.0, 0.012 * b.height * math.cos(2 * ph)]
      twist = b.twist + 6 * math.sin(ph)
      for s, sign in enumerate((1.0, -1.0)):
        forward = sign * math.sin(ph)  # > 0: this thigh is in front
        # The knee bends most as the thigh passes under the hip going
        # forwards (phase 0 for the left leg).
        bend = ((1 + math.cos(ph + s * math.pi)) / 2) ** 2
        legs[s] = dataclasses.replace(
            b.legs[s], flexion=b.legs[s].flexion + g.swing * forward,
            knee=b.legs[s].knee + g.knee * bend)
        arms[s] = dataclasses.replace(
            b.arms[s], elevation=b.arms[s].elevation - g.arm_swing * forward,
            flexion=b.arms[s].flexion + 0.6 * g.arm_swing * (1 - forward) / 2)
    for s in range(2):
      moved = {k: c[f'arm{s}_{k}'] for k in ('elevation', 'azimuth',
                                             'flexion') if f'arm{s}_{k}' in c}
      if moved:
        arms[s] = dataclasses.replace(arms[s], **moved)
    return dataclasses.replace(
        b, arms=tuple(arms), legs=tuple(legs), twist=twist,
        view=b.view + c.get('view', 0.0), yaw=c.get('yaw', b.yaw),
        lean=b.lean + c.get('lean', 0.0), pelvis=pelvis)


@dataclasses.dataclass
class _Occluder:
  """An object passing in front: an outline moving and turning."""
  outline: np.ndarray   # [V, 2] around its centre, unturned
  start: np.ndarray     # centre at frame 0
  velocity: np.ndarray  # pixels per frame
  angle: float          # at frame 0, radians
  spin: float           # radians per frame

  def at(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(fixed-point polygon, texture frame) at `frame`."""
    a = self.angle + self.spin * frame
    c, s = math.cos(a), math.sin(a)
    centre = self.start + self.velocity * frame
    poly = self.outline @ np.array([[c, s], [-s, c]]) + centre
    return shapes.to_fixed(poly), np.array([*centre, c, s, 0.0])


def _occluder_outline(rng: np.random.Generator, size: float) -> np.ndarray:
  """A pole or plank, an ellipse or a convex blob around the origin."""
  kind = rng.integers(3)
  if kind == 0:
    half = np.array([size * rng.uniform(1, 3), 0.0])
    r = np.array([size * rng.uniform(0.08, 0.25)])
    return shapes.segment_outlines(2, -half[None], half[None], r, r)[0]
  if kind == 1:
    return shapes.ellipse(np.zeros(2), shapes.ellipse_axes(
        np.array([1.0, 0.0]), size, size * rng.uniform(0.3, 1.0)))
  pts = size * rng.uniform(-1, 1, (6, 2))
  return cv2.convexHull(pts.astype(np.float32))[:, 0].astype(float)


@dataclasses.dataclass
class _Camera:
  """Pan and zoom: which part of the world the frame shows."""
  frame_hw: tuple[int, int]
  world_hw: tuple[int, int]
  pan: np.ndarray | None   # [2, 3]: per axis amplitude (0..1), rad/frame, phase
  zoom: np.ndarray | None  # log of the largest zoom, rad/frame, phase

  def matrix(self, frame: int) -> np.ndarray:
    """[2, 3] world pixel-index coordinates -> frame ones."""
    (h, w), (wh, ww) = self.frame_hw, self.world_hw
    s = 1.0
    if self.zoom is not None:
      log_max, rate, phase = self.zoom
      s = math.exp(log_max * (0.5 - 0.5 * math.cos(rate * frame + phase)))
    centre = np.array([(ww - 1) / 2, (wh - 1) / 2])
    if self.pan is not None:
      # As far as the frame's pixels stay inside the world.
      room = centre - np.array([(w - 1) / 2, (h - 1) / 2]) / s
      wave = [a * math.sin(r * frame + p) for a, r, p in self.pan]
      centre = centre + room * np.array(wave)
    return affine.crop_affine(centre, (w / s, h / s), (w, h))


class SyntheticVideo:
  """A synthetic video sequence with per-frame ground truth (module
  docstring).

  `frame(i)` gives kept frame i (frames dropped on request are skipped) as
  a dict: ``image`` uint8 [H, W, 3]; ``frame_index`` (the original frame
  number); ``track_ids`` int64 [P]; ``keypoints`` float32 [P, 17, 3] (x, y
  in frame pixel-index coordinates, visibility 0 outside the frame, 1
  hidden, 2 visible, as `SyntheticPeople`); ``boxes`` float32 [P, 4] (x1,
  y1, x2, y2 pixel edges, tight around the mask); ``head_boxes`` float32
  [P, 4] (NaN when the head is off the frame); ``person_masks`` uint8 [P, H,
  W]; ``part_map`` uint8 [H, W] (`skeletons.BODY_PARTS6`); ``is_crowd``
  bool [P] (all False); ``camera`` [2, 3], the affine map from world to
  frame pixel-index coordinates. Only people with at least one visible
  pixel are listed, in track-id order. Track ids count from 0 in about the
  order people come into view.
  """
  skeleton = skeletons.COCO17
  part_schema = skeletons.BODY_PARTS6

  def __init__(self, num_frames: int = 60, seed: int = 0, *,
               index: int = 0, image_hw: tuple[int, int] = (192, 256),
               num_people: tuple[int, int] = (1, 3),
               height_range: tuple[float, float] = (0.45, 0.8),
               pan: bool = True, zoom: bool = True, occluders: bool = True,
               drop_frames: Iterable[int] = (), fps: float = 25.0):
    """Draws the sequence's people, objects, colours and camera path.

    Args:
      num_frames: frames before dropping (at most `MAX_FRAMES`).
      seed: with `index`, determines the sequence.
      index: which sequence of `seed` (the command line's video number).
      image_hw: frame (height, width) in pixels.
      num_people: fewest and most people in the sequence (each one track;
        walkers among them may come and go during it).
      height_range: standing heights as fractions of the frame height
        (log-uniform).
      pan: whether the camera pans.
      zoom: whether it zooms in and out.
      occluders: whether objects (up to `render.MAX_OCCLUDERS`) pass in
        front of people.
      drop_frames: original frame numbers to leave out.
      fps: frame rate; motions are set in seconds.
    """
    if not 1 <= num_frames <= MAX_FRAMES:
      raise ValueError(f'num_frames must be in [1, {MAX_FRAMES}], got '
                       f'{num_frames}')
    if len(image_hw) != 2 or min(image_hw) < 16:
      raise ValueError(f'image_hw must be (height, width) >= 16, got '
                       f'{image_hw}')
    if not 0 <= num_people[0] <= num_people[1]:
      raise ValueError(f'need 0 <= num_people[0] <= num_people[1], got '
                       f'{num_people}')
    if not 0 < height_range[0] <= height_range[1]:
      raise ValueError(f'bad height_range {height_range}')
    if not fps > 0:
      raise ValueError(f'fps must be positive, got {fps}')
    if not 0 <= index < 10**6:
      # PoseTrack image ids hold the video number in 6 digits.
      raise ValueError(f'index must be in [0, 10**6), got {index}')
    dropped = {int(f) for f in drop_frames}
    outside = sorted(f for f in dropped if not 0 <= f < num_frames)
    if outside:
      raise ValueError(f'drop_frames {outside} are not frames of a '
                       f'{num_frames}-frame video')
    self.num_frames = int(num_frames)
    self.seed, self.index = int(seed), int(index)
    self.fps = float(fps)
    self.image_hw = (int(image_hw[0]), int(image_hw[1]))
    h, w = self.image_hw
    self._margins = (round(_MARGIN * h), round(_MARGIN * w))
    self.world_hw = (h + 2 * self._margins[0], w + 2 * self._margins[1])
    self._kept = [t for t in range(self.num_frames) if t not in dropped]

    world = np.random.default_rng((self.seed, self.index, 2))
    actors = [self._actor(world, height_range)
              for _ in range(world.integers(num_people[0],
                                            num_people[1] + 1))]
    # Track ids in the order people come into view; drawn far to near.
    order = sorted(range(len(actors)), key=lambda a: (actors[a].entry, a))
    drawn = sorted(range(len(actors)), key=lambda a: actors[a].depth)
    track_of = {a: k for k, a in enumerate(order)}
    self._track_ids = np.array([track_of[a] for a in drawn], np.int64)
    self._actors = [actors[a] for a in drawn]
    self._occluders = []
    if occluders:
      self._occluders = [
          self._occluder(world)
          for _ in range(world.integers(1, render.MAX_OCCLUDERS + 1))]

    colours = np.random.default_rng((self.seed, self.index, 3))
    cfg = scene_lib.Config(
        image_hw=self.world_hw, min_people=0, max_people=0,
        height_range=tuple(height_range), occluder_prob=0.0,
        min_visible_fraction=0.0, uniform_colour_prob=0.5, max_clutter=20)
    self._appearance = pixels.draw_appearance(
        colours, np.array([a.base.height for a in self._actors]),
        len(self._occluders), cfg,
        np.empty((3,) + self.world_hw, np.float32))
    num_ids = len(self._appearance.materials)
    # Where each surface's noise texture sits in the noise fields.
    wh, ww = self.world_hw
    self._noise_offsets = colours.uniform((0.2 * ww, 0.2 * wh),
                                          (0.8 * ww, 0.8 * wh), (num_ids, 2))
    self._blur = colours.uniform(0.4, 0.9) if colours.random() < 0.5 else 0.0
    self._noise = colours.uniform(0, 6)

    cam = np.random.default_rng((self.seed, self.index, 4))
    per_frame = 2 * math.pi / self.fps
    pan_wave = zoom_wave = None
    if pan:
      pan_wave = np.array([
          (cam.uniform(0.4, 1.0), per_frame * cam.uniform(0.08, 0.25),
           cam.uniform(0, 2 * math.pi)),
          (cam.uniform(0.1, 0.5), per_frame * cam.uniform(0.08, 0.25),
           cam.uniform(0, 2 * math.pi))])
    if zoom:
      zoom_wave = np.array([math.log(cam.uniform(1.15, 1.5)),
                            per_frame * cam.uniform(0.05, 0.2),
                            cam.uniform(0, 2 * math.pi)])
    self._camera = _Camera(self.image_hw, self.world_hw, pan_wave, zoom_wave)

  def _actor(self, rng: np.random.Generator,
             height_range: tuple[float, float]) -> _Actor:
    """A walker (60 %) or a stander, in world coordinates."""
    h, w = self.image_hw
    mh, mw = self._margins
    duration = self.num_frames / self.fps
    base = body.sample_pose(rng, self.image_hw, height_range)
    size = base.height
    walking = rng.random() < 0.6
    # People on video stand upright before an upright camera.
    base = dataclasses.replace(
        base, roll=_clip(base.roll, -6, 6),
        camera_tilt=_clip(base.camera_tilt, -10, 10))
    # Feet near the bottom of the frame, the head rarely above it.
    low = max(size - 0.05 * h, 0.55 * h)
    feet = rng.uniform(min(low, 1.03 * h), 1.03 * h)
    start = np.array([0.0, mh + feet - 0.5 * size])
    curves = {}
    if walking:
      direction = 1.0 if rng.random() < 0.5 else -1.0
      speed = rng.uniform(0.45, 0.9) * size / self.fps  # pixels per frame
      swing = rng.uniform(18, 28)
      # One cycle is two steps of 2 leg sin(swing) each: feet barely slide.
      leg = 0.48 * base.proportions[0] * size
      gait = _Gait(phase=rng.uniform(0, 2 * math.pi),
                   rate=2 * math.pi * speed / (
                       4 * leg * math.sin(math.radians(swing))),
                   swing=swing, knee=rng.uniform(30, 50),
                   arm_swing=rng.uniform(12, 30))
      base = dataclasses.replace(
          base, lean=_clip(base.lean, -5, 15),
          side_bend=_clip(base.side_bend, -4, 4),
          # Facing the way it goes (-90: to the image's right), more or
          # less towards or away from the camera.
          view=-90 * direction + rng.uniform(-35, 35),
          legs=tuple(dataclasses.replace(
              leg_pose, flexion=rng.uniform(-3, 8),
              abduction=rng.uniform(-2, 6), knee=rng.uniform(3, 12),
              knee_twist=_clip(leg_pose.knee_twist, -8, 8),
              foot=rng.uniform(-5, 15)) for leg_pose in base.legs),
          arms=tuple(dataclasses.replace(
              arm, elevation=rng.uniform(0, 10), azimuth=rng.uniform(75, 100),
              flexion=rng.uniform(5, 25), twist=_clip(arm.twist, -25, 25))
                     for arm in base.arms))
      # Where the pelvis is at a moment t_ref: just outside the frame (at
      # rest) on the way in or out, or anywhere in it.
      reach = 0.35 * size
      way_in, way_out = (mw - reach, mw + w + reach)[::int(direction)]
      mode = shapes.pick(rng, (0.35, 0.35, 0.3))
      if mode == 0:
        t_ref, x_ref = rng.uniform(0.05, 0.6) * self.num_frames, way_in
      elif mode == 1:
        t_ref, x_ref = rng.uniform(0.4, 0.95) * self.num_frames, way_out
      else:
        t_ref = rng.uniform(0, self.num_frames - 1)
        x_ref = mw + rng.uniform(0.15, 0.85) * w
      velocity = np.array([direction, rng.uniform(-0.1, 0.1)]) * speed
      start = start + [x_ref - direction * speed * t_ref,
                       -velocity[1] * t_ref]
      entry = max((way_in - start[0]) * direction / speed, 0.0)
      sway = (0.0, 0.0, 0.0)
      curves['view'] = _random_keys(rng, duration,
                                    lambda _: rng.uniform(-15, 15))
      curves['yaw'] = _random_keys(rng, duration,
                                   lambda _: rng.uniform(-30, 30))
    else:
      gait = None
      velocity = np.array([rng.uniform(-0.05, 0.05) * size / self.fps, 0.0])
      start[0] = mw + rng.uniform(0.1, 0.9) * w
      entry = 0.0
      sway = (rng.uniform(0, 0.02) * size,
              2 * math.pi * rng.uniform(0.1, 0.4) / self.fps,
              rng.uniform(0, 2 * math.pi))
      base = dataclasses.replace(
          base, lean=_clip(base.lean, -15, 35),
          legs=tuple(dataclasses.replace(
              leg_pose, flexion=_clip(leg_pose.flexion, -15, 30),
              abduction=_clip(leg_pose.abduction, -5, 20),
              knee=_clip(leg_pose.knee, 0, 30)) for leg_pose in base.legs))

      def turn(previous: float | None) -> float:
        if previous is None:
          return 0.0
        big = rng.random() < 0.5
        return previous + rng.uniform(-110, 110) * (1.0 if big else 0.2)

      curves['view'] = _random_keys(rng, duration, turn)
      curves['yaw'] = _random_keys(rng, duration,
                                   lambda _: rng.uniform(-50, 50))
      curves['lean'] = _random_keys(rng, duration,
                                    lambda _: rng.uniform(-8, 8))
      for s in range(2):
        if rng.random() < 0.7:
          for name, lo_hi in (('elevation', (0, 150)), ('azimuth', (-20, 110)),
                              ('flexion', (0, 140))):
            curves[f'arm{s}_{name}'] = _random_keys(
                rng, duration, lambda _, r=lo_hi: rng.uniform(*r))
    return _Actor(base=base, start=start, velocity=velocity, gait=gait,
                  sway=sway, curves=curves,
                  depth=size * rng.uniform(0.7, 1.3), entry=entry)

  def _occluder(self, rng: np.random.Generator) -> _Occluder:
    """An object crossing in front of someone (or anywhere if nobody)."""
    h, w = self.image_hw
    mh, mw = self._margins
    t_pass = rng.uniform(0, self.num_frames - 1)
    if self._actors:
      actor = self._actors[rng.integers(len(self._actors))]
      at = (actor.pose(int(t_pass), self.fps).pelvis +
            rng.uniform(-0.3, 0.3, 2) * actor.base.height)
    else:
      at = np.array([mw, mh]) + rng.uniform((0, 0), (w, h))
    size = min(h, w) * math.exp(rng.uniform(math.log(0.06), math.log(0.35)))
    outline = _occluder_outline(rng, size)
    heading = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(0.15, 0.45) * w / self.fps
    velocity = speed * np.array([math.cos(heading), math.sin(heading)])
    spin = rng.uniform(-0.6, 0.6) / self.fps
    angle = rng.uniform(0, math.pi)
    return _Occluder(outline=outline, start=at - velocity * t_pass,
                     velocity=velocity, angle=angle - spin * t_pass,
                     spin=spin)

  def __len__(self) -> int:
    return len(self._kept)

  def frame_index(self, i: int) -> int:
    """The original frame number of kept frame `i`."""
    return self._kept[i]

  def world(self, frame_number: int) -> tuple[list[body.Person],
                                                list[np.ndarray],
                                                np.ndarray]:
    """People (in draw order), occluder polygons and [num owner ids, 5]
    texture frames of original frame `frame_number`, in world pixels."""
    people = [body.pose_person(a.pose(frame_number, self.fps), self.world_hw)
              for a in self._actors]
    frames = np.zeros((len(self._appearance.materials), 5))
    frames[render.FIRST_PERSON_ID:] = np.reshape(
        [p.frames for p in people], (-1, 5))
    polygons = []
    for k, occluder in enumerate(self._occluders):
      poly, frames[1 + k] = occluder.at(frame_number)
      polygons.append(poly)
    return people, polygons, frames

  def _noise_frames(self, frames: np.ndarray) -> np.ndarray:
    """Per owner id, the rigid map from world pixels into the noise fields
    that moves with the surface's texture frame."""
    ox, oy, ux, uy = frames[:, :4].T
    off = self._noise_offsets
    out = np.zeros((len(frames), 2, 3))
    out[:, 0] = np.stack([ux, uy, off[:, 0] - ux * ox - uy * oy], -1)
    out[:, 1] = np.stack([-uy, ux, off[:, 1] + uy * ox - ux * oy], -1)
    return out

  def frame(self, i: int) -> dict[str, Any]:
    """Kept frame `i` and its ground truth (class docstring)."""
    t = self._kept[i]
    h, w = self.image_hw
    people, occluders, frames = self.world(t)
    owner = render.rasterise(self.world_hw, people, occluders)
    ws = pixels.workspace(*self.world_hw)
    world_image = pixels.paint(self._appearance, owner, frames, ws,
                               self._noise_frames(frames))
    camera = self._camera.matrix(t)
    image = cv2.warpAffine(world_image, camera, (w, h),
                           flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    image = pixels.camera_effects(
        np.random.default_rng((self.seed, self.index, 5, t)), image,
        pixels.workspace(h, w), blur=self._blur, noise=self._noise)
    frame_owner = cv2.warpAffine(owner, camera, (w, h),
                                 flags=cv2.INTER_NEAREST,
                                 borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
    # finish_scene reads boxes off the masks; head boxes are pixel edges,
    # half a pixel off index coordinates.
    seen = [dataclasses.replace(
        p, keypoints=affine.apply(camera, p.keypoints),
        head_box=affine.apply(camera, p.head_box.reshape(2, 2) - 0.5).ravel()
        + 0.5) for p in people]
    scene = render.finish_scene(frame_owner, seen, len(occluders))
    listed = np.flatnonzero(scene.person_masks.any((1, 2)))
    listed = listed[np.argsort(self._track_ids[listed], kind='stable')]
    ann = scene.annotation
    return dict(
        image=image, frame_index=t, track_ids=self._track_ids[listed],
        keypoints=ann['keypoints'][listed], boxes=ann['boxes'][listed],
        head_boxes=ann['head_boxes'][listed],
        person_masks=scene.person_masks[listed], part_map=scene.part_map,
        is_crowd=ann['is_crowd'][listed], camera=camera)


def posetrack_image_id(index: int, frame_number: int) -> int:
  """PoseTrack's image id: 1, the 6-digit video number, 4-digit frame."""
  return 10_000_000_000 + 10_000 * int(index) + int(frame_number)


def export(video: SyntheticVideo, output_dir: str, *, as_video: bool = False,
           jpeg_quality: int = 95) -> dict[str, str]:
  """Writes `video` with its ground truth; returns the paths written.

  Layout: ``frames/<6-digit frame number>.jpg`` (or ``video.mp4`` of the
  kept frames, `as_video`), ``parts/<frame number>.png`` (uint8 part
  labels) and ``posetrack.json`` in PoseTrack 2018's layout: ``images``
  (``id`` = ``frame_id`` = `posetrack_image_id`, ``file_name``,
  ``vid_id``, ``nframes`` = frames before dropping, ``is_labeled``,
  ``height``, ``width``; dropped frames are absent), ``annotations``
  (``track_id``, COCO keypoints in the order of `skeletons.COCO17`,
  ``bbox`` and ``bbox_head`` as x, y, w, h, ``area``, ``num_keypoints``,
  ``segmentation`` as compressed RLE; ``bbox_head`` is left out where the
  head is off the frame) and ``categories``. Coordinates are those of
  `hpe_jax.data.coco`'s writer and reader: keypoints in pixel-index
  coordinates, boxes in pixel edges, so `coco.CocoKeypoints` reads the
  frames' ground truth back (with ``image_dir=output_dir``). The same
  video gives byte-identical frames and JSON.

  Returns:
    ``{'posetrack': json path, 'frames' or 'video': path, 'parts': dir}``.
  """
  h, w = video.image_hw
  paths = {'parts': os.path.join(output_dir, 'parts'),
           'posetrack': os.path.join(output_dir, 'posetrack.json')}
  os.makedirs(paths['parts'], exist_ok=True)
  if as_video:
    paths['video'] = os.path.join(output_dir, 'video.mp4')
    writer = video_io.VideoWriter(paths['video'], video.fps)
  else:
    paths['frames'] = os.path.join(output_dir, 'frames')
    os.makedirs(paths['frames'], exist_ok=True)
    writer = None
  vid_id = f'{video.index:06d}'
  images, annotations = [], []
  try:
    for i in range(len(video)):
      f = video.frame(i)
      t = f['frame_index']
      stem = f'{t:06d}'
      image_id = posetrack_image_id(video.index, t)
      if writer is not None:
        writer.write(f['image'])
        file_name = 'video.mp4'
      else:
        file_name = f'frames/{stem}.jpg'
        if not cv2.imwrite(os.path.join(output_dir, file_name),
                           cv2.cvtColor(f['image'], cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]):
          raise OSError(f'could not write {file_name} in {output_dir}')
      png = os.path.join(paths['parts'], stem + '.png')
      if not cv2.imwrite(png, f['part_map']):
        raise OSError(f'could not write {png}')
      images.append(dict(
          coco.coco_image_entry(dict(image_id=image_id, height=h, width=w),
                                file_name),
          frame_id=image_id, vid_id=vid_id, nframes=video.num_frames,
          is_labeled=True))
      entries = coco.coco_annotation_entries(
          dict(f, image_id=image_id), len(annotations) + 1)
      for entry, track, head in zip(entries, f['track_ids'],
                                    f['head_boxes']):
        entry['track_id'] = int(track)
        if np.isfinite(head).all():
          x1, y1, x2, y2 = (float(v) for v in head)
          entry['bbox_head'] = [x1, y1, x2 - x1, y2 - y1]
      annotations += entries
  finally:
    if writer is not None:
      writer.close()
  data = dict(
      info=dict(description='hpe_jax synthetic video', seed=video.seed,
                index=video.index, fps=video.fps),
      images=images, annotations=annotations,
      categories=coco.coco_categories(skeletons.COCO17))
  with open(paths['posetrack'], 'w') as f:
    json.dump(data, f, separators=(',', ':'))
  return paths


def define_flags() -> None:
  # Only when run as a program, so that importing the module never clashes
  # with a trainer's own --seed or --output.
  flags.DEFINE_string('output', None, 'Folder to write.', required=True)
  flags.DEFINE_integer('num_frames', 60, 'Frames per video, before dropping.')
  flags.DEFINE_integer('seed', 0, 'Seed of the videos.')
  flags.DEFINE_integer('num_videos', 1, 'Videos to write, each in '
                       'OUTPUT/<6-digit video number>.')
  flags.DEFINE_list('drop', [], 'Frame numbers to leave out.')
  flags.DEFINE_enum('format', 'frames', ['frames', 'mp4'],
                    'JPEG frames or one MP4.')
  flags.DEFINE_list('image_size', ['192', '256'], 'height,width in pixels.')
  flags.DEFINE_float('fps', 25.0, 'Frame rate.')


def main(argv: Sequence[str]) -> None:
  # Imported here: the command-line helpers pull in JAX, which the
  # dataset itself does not need.
  from hpe_jax import cli  # pylint: disable=g-import-not-at-top
  del argv
  f = flags.FLAGS
  try:
    size = [int(v) for v in f.image_size]
    drop = [int(v) for v in f.drop]
  except ValueError as e:
    raise errors.ConfigError(f'--image_size and --drop take integers: {e}')
  if len(size) != 2:
    raise errors.ConfigError(f'--image_size={",".join(f.image_size)}: '
                             'expected height,width')
  if f.num_videos < 1:
    raise errors.ConfigError(f'--num_videos={f.num_videos}: must be >= 1')
  for index in range(f.num_videos):
    try:
      video = SyntheticVideo(f.num_frames, seed=f.seed, index=index,
                             image_hw=tuple(size), drop_frames=drop,
                             fps=f.fps)
    except ValueError as e:
      raise errors.ConfigError(str(e)) from e
    folder = cli.output_folder(f.output, f'{index:06d}')
    paths = export(video, str(folder), as_video=f.format == 'mp4')
    print(f'wrote {len(video)} frames and {paths["posetrack"]}')


if __name__ == '__main__':
  define_flags()
  from hpe_jax import cli as _cli  # pylint: disable=g-import-not-at-top
  _cli.run(main)
