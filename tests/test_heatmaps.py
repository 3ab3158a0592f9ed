"""Gaussian heatmap targets against an explicit per-pixel reference."""

import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax.codecs import heatmap as heatmaps


def reference(keypoints, weights, size, sigma):
  h, w = size
  out = np.zeros((h, w, len(keypoints)))
  for k, ((x, y), wt) in enumerate(zip(keypoints, weights)):
    if wt <= 0:
      continue
    for i in range(h):
      for j in range(w):
        out[i, j, k] = np.exp(-((j - x) ** 2 + (i - y) ** 2) / (2 * sigma**2))
  return out


def test_matches_reference_at_subpixel_positions():
  kp = np.array([[3.3, 7.8], [0.0, 0.0], [15.49, 2.51], [-2.0, 5.0]])
  wt = np.array([1.0, 0.0, 1.0, 1.0])
  got = heatmaps.gaussian_heatmaps(kp, wt, (12, 16), 1.7)
  np.testing.assert_allclose(got, reference(kp, wt, (12, 16), 1.7),
                             atol=1e-6)
  assert float(jnp.abs(got[..., 1]).max()) == 0.0


def test_targets_weight_only_labelled_joints_on_the_grid():
  kp = jnp.array([[[5.0, 5.0], [20.0, 3.0], [3.0, 3.0], [-0.6, 2.0]]])
  vis = jnp.array([[2, 2, 0, 1]])
  heat, weights = heatmaps.heatmap_targets(kp, vis, (16, 16), 2.0)
  np.testing.assert_array_equal(weights, [[1, 0, 0, 0]])
  assert heat.shape == (1, 16, 16, 4)
  assert float(heat[0, 5, 5, 0]) == 1.0
  assert float(heat[..., 1:].max()) == 0.0


def test_batched_under_jit_equals_unbatched():
  rng = np.random.default_rng(0)
  kp = rng.uniform(0, 32, (2, 3, 17, 2)).astype(np.float32)
  vis = rng.integers(0, 3, (2, 3, 17))
  fn = jax.jit(heatmaps.heatmap_targets, static_argnums=(2, 3))
  heat, weights = fn(kp, vis, (32, 24), 2.0)
  assert heat.shape == (2, 3, 32, 24, 17)
  one, w1 = heatmaps.heatmap_targets(kp[1, 2], vis[1, 2], (32, 24), 2.0)
  np.testing.assert_allclose(heat[1, 2], one, atol=1e-6)
  np.testing.assert_array_equal(weights[1, 2], w1)
