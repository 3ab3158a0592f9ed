"""Skeleton prior maps for the pose-conditioned person-mask network.

The mask network is told whose mask to predict by an extra input channel: a
soft drawing of that person's skeleton, one Gaussian "tube" of width sigma
along every labelled limb plus a Gaussian bump at every labelled joint. It is
array code like `hpe_jax.codecs.heatmap`, rendered inside the jitted step from
the [B, K, 3] keypoints, in the same pixel-index coordinates (x = column,
y = row, pixel centres at integers).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _segments(limbs, num_joints: int) -> np.ndarray:
  """[L + K, 2] joint index pairs: the limbs, then each joint as a point."""
  joints = np.arange(num_joints)
  return np.concatenate([np.asarray(limbs, np.int32).reshape(-1, 2),
                         np.stack([joints, joints], -1)]).astype(np.int32)


def limb_prior(keypoints, limbs, size, sigma: float, dtype=jnp.float32):
  """Renders the skeleton as max-combined Gaussians of segment distance.

  Args:
    keypoints: [..., K, 3] x, y in output-grid pixel-index coordinates and
      visibility (0 unlabelled).
    limbs: [L, 2] static (numpy) joint index pairs, e.g.
      `Skeleton.limb_indices`.
    size: (height, width) of the map.
    sigma: Gaussian standard deviation in map pixels.
    dtype: output dtype.

  Returns:
    [..., h, w] in [0, 1]: at each pixel, the maximum over limbs with both
    ends labelled and over labelled joints of ``exp(-d^2 / (2 sigma^2))``,
    d the distance from the pixel centre to the limb segment (to the joint).
    Zero where nothing is labelled.
  """
  h, w = size
  kp = jnp.asarray(keypoints, jnp.float32)
  # A joint's bump is the same formula for a zero-length segment, so one
  # pass over limbs and joints together covers both.
  seg = _segments(limbs, kp.shape[-2])
  a = kp[..., seg[:, 0], :]
  b = kp[..., seg[:, 1], :]
  labelled = (a[..., 2] > 0) & (b[..., 2] > 0)
  ab = b[..., :2] - a[..., :2]
  length2 = (ab ** 2).sum(-1)
  safe_length2 = jnp.where(length2 > 0, length2, 1.0)
  # Pixel offsets from the first end, [..., h, 1, S] and [..., 1, w, S]:
  # broadcasting them keeps every [h, w, S] array scalar per pixel.
  dx = (jnp.arange(w, dtype=jnp.float32)[:, None]
        - a[..., None, None, :, 0])
  dy = (jnp.arange(h, dtype=jnp.float32)[:, None, None]
        - a[..., None, None, :, 1])
  abx = ab[..., None, None, :, 0]
  aby = ab[..., None, None, :, 1]
  t = jnp.clip((dx * abx + dy * aby) / safe_length2[..., None, None, :],
               0.0, 1.0)
  dist2 = (dx - t * abx) ** 2 + (dy - t * aby) ** 2
  dist2 = jnp.where(labelled[..., None, None, :], dist2, jnp.inf)
  # The maximum of the Gaussians is the Gaussian of the nearest segment.
  nearest2 = dist2.min(-1)
  return jnp.exp(-nearest2 / (2 * sigma ** 2)).astype(dtype)
