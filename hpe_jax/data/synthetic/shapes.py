"""Outlines shared by people, occluders and backgrounds, in OpenCV's units.

Every surface is drawn as a polygon with vertices in 1/16 pixel (`SHIFT`
fractional bits) so that cv2.fillPoly rasterises it with sub-pixel accuracy.
`pick`, a cheap weighted choice, lives here because the body, scene and
material samplers all use it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Polygon vertices are passed to OpenCV in 1/16 pixel units.
SHIFT = 4
SUBPIXEL = 1 << SHIFT

_STEPS = np.arange(32, dtype=np.float64)


def ellipse(c: np.ndarray, axes: np.ndarray) -> np.ndarray:
  """Outline of c + axes @ (cos t, sin t), an ellipse given by a 2x2 matrix."""
  r = math.sqrt(float((axes * axes).sum(0).max()))
  # Enough vertices that the polygon stays within ~0.2 px of the curve.
  n = int(min(max(2 * math.pi * (1.0 + math.sqrt(r)), 8), 28))
  t = 2 * math.pi / n * _STEPS[:n]
  return c + np.stack([np.cos(t), np.sin(t)], -1) @ axes.T


def ellipse_axes(u: np.ndarray, ru: float, rv: float) -> np.ndarray:
  """Ellipse axes: semi-axis `ru` along unit vector `u`, `rv` across it."""
  return np.array([[u[0] * ru, -u[1] * rv], [u[1] * ru, u[0] * rv]])


def to_fixed(poly: np.ndarray) -> np.ndarray:
  return np.round(poly * SUBPIXEL).astype(np.int32)


def segment_outlines(style: int, a: np.ndarray, b: np.ndarray,
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


def pick(rng: np.random.Generator, probs: Sequence[float]) -> int:
  """Index drawn with the given probabilities (cheaper than rng.choice)."""
  u = rng.random()
  for i, p in enumerate(probs):
    u -= p
    if u < 0:
      return i
  return len(probs) - 1
