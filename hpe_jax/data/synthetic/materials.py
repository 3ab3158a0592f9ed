"""Materials: the colours and textures of every drawn surface.

Every surface (background, clutter shape, occluder, person primitive) has a
material and a frame (origin, unit axis, half width). Both fold into one row
of per-surface parameters (`surface_rows`), from which `pixels` computes the
image for all pixels at once.

Texture coordinates are along (a) and across (b) the surface's axis from its
origin: stripes = sin(k (a cos t + b sin t)), gradient = a linear ramp,
noise = three shared noise fields; shading darkens limbs towards their
edges (|b| -> half width) so that touching parts of one colour separate.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np

from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import shapes

# A material: stripe wave number, angle to the axis and sharpness (0.5 sine,
# large = hard edges), gradient inverse length and angle, the weights of
# stripes, gradient and the three noise fields, edge shading, two colours.
MATERIAL_FIELDS = ('k', 'stripe_angle', 'sharp', 'ginv', 'grad_angle', 'ws',
                   'wg', 'w0', 'w1', 'w2', 'shade', 'r1', 'g1', 'b1', 'r2',
                   'g2', 'b2')
_M = {k: i for i, k in enumerate(MATERIAL_FIELDS)}
_COLOURS = slice(_M['r1'], _M['b2'] + 1)

# A surface row: the planes (in image x, y) of the stripe phase, gradient and
# across-axis coordinate, then the material's weights and colours.
ROW_FIELDS = ('sx', 'sy', 's0', 'gx', 'gy', 'g0', 'hx', 'hy', 'h0', 'sharp',
              'ws', 'wg', 'w0', 'w1', 'w2', 'shade', 'r1', 'g1', 'b1', 'r2',
              'g2', 'b2')

_EYES = [body.PRIMITIVE_INDEX['left_eye'], body.PRIMITIVE_INDEX['right_eye']]
_NOSE = body.PRIMITIVE_INDEX['nose']


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
  m = np.zeros(len(MATERIAL_FIELDS))
  m[_M['k']] = m[_M['ginv']] = 0.01
  m[_M['sharp']] = 0.5
  m[_COLOURS] = np.concatenate([c1, c2])
  return m


def random_material(rng: np.random.Generator, scale: float,
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
  kind = shapes.pick(rng, (0.35, 0.25, 0.15, 0.15, 0.1))
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


def surface_rows(mats: np.ndarray, frames: np.ndarray) -> np.ndarray:
  """[N, len(ROW_FIELDS)] float32 rows of materials [N, M] in frames [N, 5]."""
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
  rest = [m[_M[c]] for c in ROW_FIELDS[9:]]
  return np.stack([sx, sy, s0, gx, gy, g0 + 0.5, hx, hy, h0, *rest],
                  -1).astype(np.float32)


def person_materials(rng: np.random.Generator, height: float,
                     uniform_prob: float) -> tuple[np.ndarray, bool]:
  """[NUM_PRIMITIVES, M] materials of one person; whether to outline them."""
  scale = 0.25 * height
  mats = np.empty((body.NUM_PRIMITIVES, len(MATERIAL_FIELDS)))
  if rng.random() < uniform_prob:
    # One material everywhere: only shape and context tell the parts apart.
    m = random_material(rng, scale)
    mats[:] = m
    # Eyes and nose must stand out on dark materials too.
    dark = m[_COLOURS][:3].mean() < 90
    eye = m.copy()
    eye[_COLOURS] = 0.3 * m[_COLOURS] + (170 if dark else 0)
    mats[_EYES] = eye
    mats[_NOSE] = _darker(m, 1.5 if dark else 0.75)
  else:
    skin = random_material(rng, scale, _skin_colour(rng))
    skin[[_M['ws'], _M['wg']]] = 0.0
    hair = skin.copy()
    hair[_COLOURS] = np.concatenate([_hair_colour(rng),
                                     0.8 * _hair_colour(rng)])
    if rng.random() < 0.7:
      shirt, pants = (random_material(rng, scale) for _ in range(2))
      shoes = random_material(rng, scale, _hsv_colour(rng, val=(0.05, 0.5)))
      by_part = dict(torso=shirt, neck=skin, upper_arm=shirt,
                     lower_arm=shirt if rng.random() < 0.6 else skin,
                     hand=skin, upper_leg=pants,
                     lower_leg=pants if rng.random() < 0.75 else skin,
                     foot=shoes)
    else:
      by_part = {k: random_material(rng, scale)
                 for k in body.PART_OF_PRIMITIVE}
    for k, name in enumerate(body.PRIMITIVES):
      mats[k] = by_part.get(name.removeprefix('left_').removeprefix('right_'),
                            skin)
    mats[body.PRIMITIVE_INDEX['skull']] = hair if rng.random() < 0.8 else skin
    mats[_EYES] = _plain_material(
        np.full(3, rng.uniform(5, 60)), np.full(3, rng.uniform(5, 60)))
    mats[_NOSE] = _darker(skin, 0.8)
  mats[_EYES + [_NOSE], _M['shade']] = 0.0
  return mats, rng.random() < 0.25
