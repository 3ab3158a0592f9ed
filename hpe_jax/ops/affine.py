"""2-D affine transforms between image, model-input and heatmap coordinates.

All geometry (crop, scale, rotation, shift, flip) is one 2x3 matrix mapping
pixel-index coordinates of the source image to those of the target grid, so
image, keypoints, masks and part maps move identically.

Heatmap grids are centre-aligned with the input: heatmap pixel ``h`` covers
input pixels ``[h*s, (h+1)*s)`` for stride ``s``, so its centre is at input
coordinate ``(h + 0.5) * s - 0.5``. With this alignment mirroring a heatmap is
exactly the heatmap of the mirrored input (no one-pixel flip shift needed).
"""

from __future__ import annotations

import numpy as np


def box_to_center_size(box, aspect_ratio: float, padding: float = 1.0):
  """Centre and (w, h) of a box grown to `aspect_ratio` (w/h), then padded."""
  x1, y1, x2, y2 = np.asarray(box, np.float64)
  center = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
  w, h = max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)
  if w > aspect_ratio * h:
    h = w / aspect_ratio
  else:
    w = h * aspect_ratio
  return center, np.array([w, h]) * padding


def crop_affine(center, size, output_size, rotation_deg: float = 0.0,
                flip: bool = False) -> np.ndarray:
  """2x3 matrix sending the rotated box (center, size=(w, h)) onto a grid.

  The box edges map onto the grid edges: the output grid of ``output_size``
  (w, h) pixels covers exactly the box. Positive rotation turns the *content*
  counter-clockwise in the output (the box is rotated clockwise in the
  source image). `flip` mirrors the output horizontally.
  """
  out_w, out_h = output_size
  sx = out_w / size[0]
  sy = out_h / size[1]
  theta = np.deg2rad(rotation_deg)
  c, s = np.cos(theta), np.sin(theta)
  # y points down, so this rotation is counter-clockwise on screen.
  rot = np.array([[c, s], [-s, c]])
  lin = np.diag([sx, sy]) @ rot
  if flip:
    lin = np.diag([-1.0, 1.0]) @ lin
  # In pixel-index coordinates the grid's edges are at -0.5 and out - 0.5,
  # so its centre is (out - 1) / 2; sending the box centre there puts the
  # box edges on the grid edges.
  out_center = np.array([(out_w - 1) / 2, (out_h - 1) / 2])
  t = out_center - lin @ np.asarray(center, np.float64)
  return np.concatenate([lin, t[:, None]], 1)


def stride_affine(stride: float) -> np.ndarray:
  """2x3 matrix from input pixel coordinates to a centre-aligned grid."""
  return np.array([[1 / stride, 0, 0.5 / stride - 0.5],
                   [0, 1 / stride, 0.5 / stride - 0.5]])


def compose(second: np.ndarray, first: np.ndarray) -> np.ndarray:
  """The 2x3 matrix applying `first`, then `second`."""
  a = np.vstack([second, [0, 0, 1]])
  b = np.vstack([first, [0, 0, 1]])
  return (a @ b)[:2]


def invert(matrix):
  """Inverse of [..., 2, 3] affine matrices; numpy in, numpy out, and jax
  arrays (also under jit) in, jax arrays out."""
  xp = matrix.__array_namespace__() if hasattr(
      matrix, '__array_namespace__') else np
  matrix = xp.asarray(matrix)
  if matrix.dtype.kind in 'iu':
    matrix = xp.astype(matrix, xp.float64)
  inv = xp.linalg.inv(matrix[..., :2])
  t = -(inv @ matrix[..., 2:])
  return xp.concat([inv, t], axis=-1)


def apply(matrix, points):
  """Applies [..., 2, 3] matrices to points [..., N, 2]; works on np and jnp.

  The matrix batch dims must broadcast against the points' leading dims.
  """
  lin = matrix[..., :2]
  t = matrix[..., 2]
  return (points @ lin.swapaxes(-1, -2)) + t[..., None, :]
