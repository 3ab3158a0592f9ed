"""Scene layout: how many people where, occluders in front, the background.

`make_scene` places the people of one sample and the objects that hide them
and rasterises them (`render`); `background` lays out the clutter behind
them, including distractors in the people's own materials.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np

from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import materials
from hpe_jax.data.synthetic import render
from hpe_jax.data.synthetic import shapes

# Times a hardly visible person is replaced before being left out.
_MAX_REDRAWS = 10


@dataclasses.dataclass(frozen=True)
class Config:
  """Scene and drawing settings (see `dataset.SyntheticPeople`)."""
  image_hw: tuple[int, int]
  min_people: int
  max_people: int
  height_range: tuple[float, float]
  occluder_prob: float
  min_visible_fraction: float
  uniform_colour_prob: float
  max_clutter: int


def _sample_occluder(rng: np.random.Generator, image_hw: tuple[int, int],
                     people: Sequence[body.Person]) -> np.ndarray:
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
    poly = shapes.segment_outlines(2, (centre - half)[None],
                                   (centre + half)[None], np.array([r]),
                                   np.array([r]))[0]
  elif kind == 1:
    poly = shapes.ellipse(centre, shapes.ellipse_axes(
        u, size, size * rng.uniform(0.3, 1.0)))
  else:
    pts = centre + size * rng.uniform(-1, 1, (6, 2))
    poly = cv2.convexHull(pts.astype(np.float32))[:, 0].astype(float)
  return shapes.to_fixed(poly)


def make_scene(rng: np.random.Generator, cfg: Config) -> render.Scene:
  """Samples people and occluders; redraws people who are hardly visible."""
  h, w = cfg.image_hw
  min_pixels = cfg.min_visible_fraction * h * w

  def person() -> tuple[body.Person, float]:
    p = body.sample_person(rng, cfg.image_hw, cfg.height_range)
    # Larger usually means nearer; nearer people are drawn later.
    return p, p.height * rng.uniform(0.7, 1.3)

  people = sorted((person() for _ in range(
      rng.integers(cfg.min_people, cfg.max_people + 1))), key=lambda p: p[1])
  occluders = []
  if rng.random() < cfg.occluder_prob:
    occluders = [_sample_occluder(rng, cfg.image_hw, [p for p, _ in people])
                 for _ in range(rng.integers(1, render.MAX_OCCLUDERS + 1))]
  for attempt in range(_MAX_REDRAWS + 1):
    drawn = [p for p, _ in people]
    owner = render.rasterise(cfg.image_hw, drawn, occluders)
    areas = np.bincount(owner.ravel(), minlength=render.FIRST_PERSON_ID + len(
        drawn) * body.NUM_PRIMITIVES)[render.FIRST_PERSON_ID:].reshape(
            len(drawn), body.NUM_PRIMITIVES).sum(1)
    small = areas < min_pixels
    if not small.any():
      break
    if attempt == _MAX_REDRAWS:
      # Removing people only uncovers the others, so one redraw suffices.
      drawn = [p for p, s in zip(drawn, small) if not s]
      owner = render.rasterise(cfg.image_hw, drawn, occluders)
      break
    people = sorted((person() if s else p for p, s in zip(people, small)),
                    key=lambda p: p[1])
  return render.finish_scene(owner, drawn, len(occluders))


def background(rng: np.random.Generator, image_hw: tuple[int, int],
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

  mats.append(materials.random_material(rng, size))
  frames.append((w / 2, h / 2, *random_axis(), 0))
  polys.append(None)
  if rng.random() < 0.5:
    # A second region (wall and floor, sky and ground, ...).
    axis = random_axis()
    normal = np.array([-axis[1], axis[0]])
    p0 = np.array([w / 2, h / 2]) + rng.uniform(-0.4, 0.4) * size * normal
    big = 3 * size
    mats.append(materials.random_material(rng, size))
    frames.append((*p0, *axis, 0))
    polys.append(np.array([p0 - big * axis, p0 + big * axis,
                           p0 + big * axis + big * normal,
                           p0 - big * axis + big * normal]))
  # Ids must fit in 8 bits; a bent stick takes two.
  for _ in range(min(rng.integers(3, max_clutter + 1), 120)):
    c = rng.uniform((0, 0), (w, h))
    kind = shapes.pick(rng, (0.2, 0.2, 0.15, 0.15, 0.2, 0.1))
    if kind >= 4 and len(person_mats):
      # Distractors in a person's own material: limb-like sticks and blobs.
      mat = person_mats[rng.integers(len(person_mats))]
      scale = mean_height * rng.uniform(0.6, 1.4)
    else:
      scale = size * math.exp(rng.uniform(-3.2, -0.9))
      mat = materials.random_material(rng, scale)
    axis = random_axis()
    if kind == 0:  # rectangle
      n = np.array([-axis[1], axis[0]])
      a, b = scale * rng.uniform(0.2, 1.0, 2)
      polys.append(np.array([c - a * axis - b * n, c + a * axis - b * n,
                             c + a * axis + b * n, c - a * axis + b * n]))
      frames.append((*c, *axis, 0))
    elif kind == 1:
      polys.append(shapes.ellipse(c, shapes.ellipse_axes(
          axis, scale * rng.uniform(0.2, 0.8), scale * rng.uniform(0.1, 0.6))))
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
      polys.append(shapes.ellipse(
          c, shapes.ellipse_axes(axis, half * rng.uniform(1, 3), half)))
      frames.append((*c, *axis, half))
    mats.append(mat)

  if sticks:
    s = np.array(sticks)
    stick_polys = shapes.to_fixed(shapes.segment_outlines(
        0, s[:, 0:2], s[:, 2:4], s[:, 4], s[:, 5]))
  surface = np.zeros(image_hw, np.uint8)
  for i, poly in enumerate(polys):
    if poly is not None:
      poly = (stick_polys[poly] if isinstance(poly, int)
              else shapes.to_fixed(poly))
      cv2.fillPoly(surface, [poly], i, cv2.LINE_8, shapes.SHIFT)
  return surface, materials.surface_rows(np.array(mats),
                                         np.array(frames, float))
