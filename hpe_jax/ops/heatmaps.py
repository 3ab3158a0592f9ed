"""Gaussian heatmap targets as array code, meant to run inside the jitted step.

The input pipeline only warps images and keypoints; the [B, H, W, K] targets
are made here on the accelerator from [B, K, 2] keypoints, so no host worker
spends time on per-joint loops and no large target tensors cross the bus.
"""

from __future__ import annotations

import jax.numpy as jnp


def in_grid(xy, size):
  """Whether points [..., 2] (x, y) fall on a grid of `size` (h, w) pixels."""
  h, w = size
  x, y = xy[..., 0], xy[..., 1]
  return (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)


def gaussian_heatmaps(keypoints, weights, size, sigma: float,
                      dtype=jnp.float32):
  """Renders unnormalised Gaussians (peak 1) at sub-pixel keypoint positions.

  Args:
    keypoints: [..., K, 2] x, y in heatmap pixel-index coordinates.
    weights: [..., K]; channels with weight 0 are all zero.
    size: (height, width) of the heatmaps.
    sigma: standard deviation in heatmap pixels.
    dtype: output dtype.

  Returns:
    [..., H, W, K] heatmaps, channels last.
  """
  h, w = size
  kp = jnp.asarray(keypoints, jnp.float32)
  # The 2-D Gaussian is separable: an outer product of [.., W, K] and
  # [.., H, K] profiles costs H*W*K multiplies and no exp per pixel.
  xs = jnp.arange(w, dtype=jnp.float32)[:, None]
  ys = jnp.arange(h, dtype=jnp.float32)[:, None]
  gx = jnp.exp(-(xs - kp[..., None, :, 0]) ** 2 / (2 * sigma ** 2))
  gy = jnp.exp(-(ys - kp[..., None, :, 1]) ** 2 / (2 * sigma ** 2))
  on = (jnp.asarray(weights) > 0).astype(jnp.float32)
  gx = gx * on[..., None, :]
  return (gy[..., :, None, :] * gx[..., None, :, :]).astype(dtype)


def heatmap_targets(keypoints, visibility, size, sigma: float,
                    dtype=jnp.float32):
  """Heatmaps and per-joint loss weights for labelled joints on the grid.

  Args:
    keypoints: [..., K, 2] in heatmap coordinates.
    visibility: [..., K] COCO visibility (0 unlabelled) or 0/1 weights.
    size: (height, width).
    sigma: Gaussian standard deviation in heatmap pixels.
    dtype: heatmap dtype.

  Returns:
    (heatmaps [..., H, W, K], weights [..., K] float32): a joint counts when
    it is labelled and its position lies on the heatmap grid.
  """
  weights = ((jnp.asarray(visibility) > 0) &
             in_grid(jnp.asarray(keypoints), size)).astype(jnp.float32)
  return gaussian_heatmaps(keypoints, weights, size, sigma, dtype), weights


def people_heatmaps(keypoints, person_valid, size, sigma: float):
  """Heatmaps of every person of full images, merged by maximum.

  Args:
    keypoints: [B, N, K, 3] x, y on the grid and visibility, N people.
    person_valid: [B, N] which rows are people.
    size: (height, width).
    sigma: Gaussian standard deviation in grid pixels.

  Returns:
    (heatmaps [B, H, W, K], weights [B, K]): a channel counts when the
    joint is labelled and on the grid for at least one person.
  """
  vis = keypoints[..., 2] * person_valid[..., None]
  maps, weights = heatmap_targets(keypoints[..., :2], vis, size, sigma)
  return maps.max(axis=1), weights.max(axis=1)


# Pixels within one sigma of a joint (Gaussian >= exp(-1/2)) carry its label.
_HARD_LABEL_LEVEL = 0.6065306597126334


def joint_label_targets(heatmaps, soft: bool):
  """Per-pixel targets over background + K joints from [B, H, W, K] maps.

  Hard targets (int32 [B, H, W]): label k + 1 where joint k's Gaussian is
  the largest and at least exp(-1/2) (within one sigma), 0 elsewhere. Soft
  targets (float32 [B, H, W, K + 1]): the Gaussians as joint probabilities
  (rescaled where they sum above 1) and the remainder as background.
  """
  if soft:
    joints = heatmaps / jnp.maximum(1.0, heatmaps.sum(-1, keepdims=True))
    background = 1.0 - joints.sum(-1, keepdims=True)
    return jnp.concatenate([background, joints], axis=-1)
  peak = heatmaps.max(-1)
  return jnp.where(peak >= _HARD_LABEL_LEVEL, heatmaps.argmax(-1) + 1,
                   0).astype(jnp.int32)
