"""The skeleton prior map against an explicit per-pixel reference."""

import jax
import numpy as np

from hpe_jax.data import skeletons
from hpe_jax.ops import skeleton_prior


def point_segment_distance(p, a, b):
  """Distance from p to segment ab: projection clamped to the ends."""
  p, a, b = (np.asarray(v, np.float64) for v in (p, a, b))
  ab = b - a
  denom = ab @ ab
  t = 0.0 if denom == 0 else min(1.0, max(0.0, (p - a) @ ab / denom))
  return np.linalg.norm(p - (a + t * ab))


def reference(keypoints, limbs, size, sigma):
  h, w = size
  out = np.zeros((h, w))
  for i in range(h):
    for j in range(w):
      best = 0.0
      for a, b in list(limbs) + [(k, k) for k in range(len(keypoints))]:
        if keypoints[a, 2] > 0 and keypoints[b, 2] > 0:
          d = point_segment_distance((j, i), keypoints[a, :2],
                                     keypoints[b, :2])
          best = max(best, np.exp(-d ** 2 / (2 * sigma ** 2)))
      out[i, j] = best
  return out


def random_people(rng, shape, num_joints, size):
  kp = np.concatenate([rng.uniform(-3, size[1] + 3, shape + (num_joints, 1)),
                       rng.uniform(-3, size[0] + 3, shape + (num_joints, 1)),
                       rng.integers(0, 3, shape + (num_joints, 1))], -1)
  return kp.astype(np.float32)


def test_matches_reference_on_random_skeletons():
  rng = np.random.default_rng(0)
  limbs = skeletons.LSP14.limb_indices
  size = (13, 11)
  for kp in random_people(rng, (3,), 14, size):
    got = skeleton_prior.limb_prior(kp, limbs, size, 1.7)
    np.testing.assert_allclose(got, reference(kp, limbs, size, 1.7),
                               atol=1e-5)


def test_hand_values_on_and_beside_a_segment():
  kp = np.array([[2.0, 5.0, 2], [10.0, 5.0, 1]], np.float32)
  sigma = 2.0
  prior = np.asarray(skeleton_prior.limb_prior(kp, np.array([[0, 1]]),
                                               (12, 16), sigma))
  np.testing.assert_allclose(prior[5, 2:11], 1.0)  # on the segment
  np.testing.assert_allclose(prior[[3, 7], 6], np.exp(-0.5), rtol=1e-6)
  # Past an end the endpoint is nearest: (13, 9) is 5 px from (10, 5).
  np.testing.assert_allclose(prior[9, 13], np.exp(-25 / 8), rtol=1e-6)
  assert prior.min() >= 0 and prior.max() <= 1


def test_unlabelled_ends_drop_the_limb_but_keep_the_joint():
  kp = np.array([[2.0, 2.0, 2], [10.0, 2.0, 0], [5.0, 8.0, 1]], np.float32)
  limbs = np.array([[0, 1], [1, 2]])
  prior = np.asarray(skeleton_prior.limb_prior(kp, limbs, (12, 12), 1.0))
  assert prior[2, 2] == 1.0 and prior[8, 5] == 1.0  # lone joints show
  assert prior[2, 10] < 1e-6 and prior[2, 6] < 1e-3  # no limb drawn
  np.testing.assert_allclose(prior, reference(kp, limbs, (12, 12), 1.0),
                             atol=1e-6)
  nobody = kp.copy()
  nobody[:, 2] = 0
  assert float(skeleton_prior.limb_prior(nobody, limbs, (12, 12),
                                         1.0).max()) == 0.0


def test_batched_under_jit_equals_unbatched():
  rng = np.random.default_rng(1)
  limbs = skeletons.COCO17.limb_indices
  kp = random_people(rng, (2, 3), 17, (20, 24))
  fn = jax.jit(lambda k: skeleton_prior.limb_prior(k, limbs, (20, 24), 2.0))
  got = fn(kp)
  assert got.shape == (2, 3, 20, 24) and got.dtype == np.float32
  one = skeleton_prior.limb_prior(kp[1, 2], limbs, (20, 24), 2.0)
  np.testing.assert_allclose(got[1, 2], one, atol=1e-6)
