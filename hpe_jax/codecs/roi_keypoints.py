"""Keypoints on the square grids of person RoIs (Mask R-CNN's keypoint head).

Each RoI (a box in input pixels) carries an ``m x m`` grid. In training a
person's keypoints become Gaussians on their RoI's grid, each joint trained
as a distribution over the grid (spatial cross-entropy); in prediction each
joint's softmax over the grid is read back into input pixels. Both
directions live here so that the grid convention (centre-aligned: cell
``i`` covers ``[i, i + 1) / m`` of the box) is written once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from hpe_jax.codecs import heatmap

# Sigma of the targets is given for a 56 x 56 grid and scaled with it.
REFERENCE_GRID = 56


def to_grid(points, rois, size: int):
  """Input pixels [B, R, K, 2] -> coordinates on each RoI's grid."""
  origin = rois[:, :, None, :2]
  extent = jnp.maximum(rois[:, :, None, 2:] - origin, 1e-3)
  return (points + 0.5 - origin) / extent * size - 0.5


def to_input(grid_xy, rois, size: int):
  """Coordinates on each RoI's grid [B, R, K, 2] -> input pixels."""
  origin = rois[:, :, None, :2]
  extent = rois[:, :, None, 2:] - origin
  return (grid_xy + 0.5) / size * extent + origin - 0.5


@dataclasses.dataclass(frozen=True)
class RoIKeypointCodec:
  """Keypoints <-> per-RoI grids of `size` cells a side."""
  size: int = REFERENCE_GRID
  sigma: float = 2.0  # target Gaussians, in cells of a 56 grid

  def encode(self, keypoints, rois):
    """Targets of keypoints [B, R, K, 3] (input pixels, visibility) on the
    grids of `rois` [B, R, 4]: (maps [B, R, m, m, K], weights [B, R, K])."""
    grid_xy = to_grid(keypoints[..., :2], rois, self.size)
    sigma = self.sigma * self.size / REFERENCE_GRID
    return heatmap.heatmap_targets(grid_xy, keypoints[..., 2],
                                   (self.size, self.size), sigma)

  def decode(self, logits, rois):
    """Keypoints [B, R, K, 2] in input pixels and scores [B, R, K] from the
    head's logits [B, R, m, m, K].

    A joint's score is its probability mass in the 3x3 cells around the
    peak: near 1 for a peak as sharp as the training targets.
    """
    logits = logits.astype(jnp.float32)
    b, r, m, _, k = logits.shape
    probs = jax.nn.softmax(logits.reshape(b, r, m * m, k), axis=2).reshape(
        logits.shape)
    mass = jax.lax.reduce_window(probs, 0.0, jax.lax.add, (1, 1, 3, 3, 1),
                                 (1, 1, 1, 1, 1), 'SAME')
    grid_xy, scores = heatmap.decode_heatmaps(mass, 'quarter')
    return to_input(grid_xy, rois, m), scores
