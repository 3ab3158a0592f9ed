"""The dense CRF's mean-field against a plain numpy reference, its window,
vmapping over params, and what it fixes on a noisy two-region image."""

import functools
import json
import math

import jax
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax.refinement import dense_crf

FLOOR = 1e-5  # dense_crf.PROB_FLOOR, written out: the reference's own value


def reference_mean_field(probs, image, params, iterations, window=None):
  """Mean-field of the fully connected CRF, pixel pair by pixel pair.

  The Potts compatibility is an explicit label x label matrix (1 off the
  diagonal), the energy of label l at pixel i the unary plus
  sum_j sum_l' mu(l, l') k(i, j) Q_j(l'); `window` (odd) zeroes k(i, j)
  for pixels more than window // 2 rows or columns apart.
  """
  h, w, c = probs.shape
  n = h * w
  ys, xs = np.divmod(np.arange(n), w)
  colours = image.reshape(n, 3).astype(np.float64)
  (w_g, s_g, w_b, s_xy, s_rgb) = (float(v) for v in params)
  kernel = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      if i == j:
        continue
      dy, dx = ys[i] - ys[j], xs[i] - xs[j]
      if window is not None and max(abs(dy), abs(dx)) > window // 2:
        continue
      d2 = float(dy * dy + dx * dx)
      c2 = float(np.sum((colours[i] - colours[j]) ** 2))
      kernel[i, j] = (w_g * math.exp(-d2 / (2 * s_g ** 2)) +
                      w_b * math.exp(-d2 / (2 * s_xy ** 2) -
                                     c2 / (2 * s_rgb ** 2)))
  unary = -np.log(np.clip(probs.reshape(n, c).astype(np.float64), FLOOR, 1))
  potts = 1.0 - np.eye(c)
  q = np.exp(-unary)
  q /= q.sum(1, keepdims=True)
  for _ in range(iterations):
    new = np.empty_like(q)
    for i in range(n):
      energy = unary[i].copy()
      for label in range(c):
        for j in range(n):
          for other in range(c):
            energy[label] += potts[label, other] * kernel[i, j] * q[j, other]
      e = np.exp(-(energy - energy.min()))
      new[i] = e / e.sum()
    q = new
  return q.reshape(h, w, c)


def random_problem(seed, h, w, c):
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet(np.ones(c), size=(h, w)).astype(np.float32)
  probs[0, 0] = 0.0  # floored
  probs[0, 0, 0] = 1.0
  image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
  # A smooth region, so that the bilateral term is large somewhere.
  image[h // 2:, : w // 2] = (120, 60, 200)
  return probs, image


PARAMS = dense_crf.CrfParams(spatial_weight=0.4, spatial_sigma=1.5,
                             bilateral_weight=0.3, bilateral_sigma_xy=3.0,
                             bilateral_sigma_rgb=40.0)


@functools.lru_cache(maxsize=None)
def jitted_mean_field(window, iterations):
  return jax.jit(functools.partial(dense_crf.mean_field, window=window,
                                   iterations=iterations))


@pytest.mark.parametrize('c', [2, 3])
def test_full_window_matches_the_dense_reference(c):
  probs, image = random_problem(c, 7, 9, c)
  expected = reference_mean_field(probs, image, PARAMS, iterations=4)
  # 17 x 17 reaches every pixel of a 7 x 9 image from every other.
  got = np.asarray(jitted_mean_field(17, 4)(probs, image, PARAMS))
  np.testing.assert_allclose(got, expected, atol=1e-5)
  # The CRF changed something, so the match is not the unaries' echo.
  start = np.clip(probs, FLOOR, 1)
  start /= start.sum(-1, keepdims=True)
  assert np.abs(expected - start).max() > 0.2
  assert (expected.argmax(-1) != probs.argmax(-1)).sum() >= 3


@pytest.mark.parametrize('c', [2, 3])
def test_small_window_is_the_truncated_reference(c):
  probs, image = random_problem(10 + c, 9, 8, c)
  expected = reference_mean_field(probs, image, PARAMS, iterations=3,
                                  window=5)
  got = np.asarray(jitted_mean_field(5, 3)(probs, image, PARAMS))
  np.testing.assert_allclose(got, expected, atol=1e-5)
  full = reference_mean_field(probs, image, PARAMS, iterations=3)
  assert np.abs(full - expected).max() > 1e-2  # the truncation matters


def test_float_image_in_0_255_units_gives_the_same_result():
  probs, image = random_problem(3, 6, 6, 2)
  f = jitted_mean_field(3, 2)
  np.testing.assert_allclose(f(probs, image.astype(np.float32), PARAMS),
                             f(probs, image, PARAMS), atol=1e-6)


def test_zero_iterations_return_the_floored_probabilities():
  probs, image = random_problem(4, 5, 5, 3)
  got = np.asarray(dense_crf.mean_field(probs, image, PARAMS, window=3,
                                        iterations=0))
  start = np.clip(probs, FLOOR, 1)
  np.testing.assert_allclose(got, start / start.sum(-1, keepdims=True),
                             atol=1e-6)


def test_vmap_over_params_equals_a_loop_and_never_recompiles():
  probs, image = random_problem(5, 8, 8, 2)
  grid = [PARAMS,
          PARAMS._replace(spatial_weight=1.5, bilateral_sigma_rgb=10.0),
          PARAMS._replace(bilateral_weight=0.0, spatial_sigma=0.7),
          dense_crf.DEFAULT]
  traces = []

  def counted(p, im, params):
    traces.append(1)
    return dense_crf.mean_field(p, im, params, window=7, iterations=3)

  one = jax.jit(counted)
  looped = [np.asarray(one(probs, image, p)) for p in grid]
  assert len(traces) == 1, 'changing the params must not retrace'
  batched = jax.jit(jax.vmap(counted, in_axes=(None, None, 0)))(
      probs, image, dense_crf.stack_params(grid))
  assert batched.shape == (4, 8, 8, 2)
  np.testing.assert_allclose(batched, np.stack(looped), atol=1e-6)
  # The settings differ enough to give different marginals.
  assert np.abs(looped[0] - looped[1]).max() > 1e-2


def test_stack_params():
  stacked = dense_crf.stack_params([dense_crf.DEFAULT, PARAMS])
  assert isinstance(stacked, dense_crf.CrfParams)
  assert stacked.spatial_sigma.dtype == np.float32
  np.testing.assert_array_equal(
      stacked.bilateral_sigma_rgb,
      [dense_crf.DEFAULT.bilateral_sigma_rgb, 40.0])
  with pytest.raises(ValueError):
    dense_crf.stack_params([])


@pytest.mark.parametrize('window', [0, 1, 4])
def test_window_must_be_odd_and_at_least_3(window):
  with pytest.raises(ValueError, match='odd'):
    dense_crf.window_offsets(window)


def test_window_offsets_with_their_negatives_are_every_neighbour():
  half = dense_crf.window_offsets(5)
  both = {tuple(o) for o in half} | {tuple(-o) for o in half}
  assert len(half) == 12 and len(both) == 24
  assert both == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                  if (dy, dx) != (0, 0)}


def test_binary_probs():
  out = np.asarray(dense_crf.binary_probs(np.array([[-1.0, 0.0, 0.5]])))
  assert out.shape == (1, 3, 2)
  np.testing.assert_allclose(out[..., 1], [[0.0, 0.5, 0.75]])
  np.testing.assert_allclose(out.sum(-1), 1.0)


def iou(pred, truth):
  return (pred & truth).sum() / (pred | truth).sum()


def two_regions(seed=0, size=32):
  """A dark left and bright right half (colour noise), person = right; the
  network's probabilities are right 0.75 of the time and wrong on 12% of
  pixels scattered at random, and undecided (0.45-0.55) in a 4-pixel band
  left of the boundary."""
  rng = np.random.default_rng(seed)
  truth = np.zeros((size, size), bool)
  truth[:, size // 2:] = True
  image = np.where(truth[..., None], 180, 60) + rng.integers(
      -20, 21, (size, size, 3))
  person = np.where(truth, 0.75, 0.25)
  wrong = rng.random((size, size)) < 0.12
  person = np.where(wrong, 1 - person, person)
  band = slice(size // 2 - 4, size // 2)
  person[:, band] = rng.uniform(0.45, 0.55, (size, 4))
  return (np.stack([1 - person, person], -1).astype(np.float32),
          image.astype(np.uint8), truth)


def test_crf_fixes_isolated_pixels_and_the_undecided_band():
  probs, image, truth = two_regions()
  before = iou(probs.argmax(-1) == 1, truth)
  strong = dense_crf.CrfParams(spatial_weight=0.5, spatial_sigma=1.0,
                               bilateral_weight=0.3, bilateral_sigma_xy=3.0,
                               bilateral_sigma_rgb=20.0)
  labels = np.asarray(dense_crf.refine(probs[None], image[None], strong))
  assert labels.shape == (1, 32, 32) and labels.dtype == np.uint8
  after = iou(labels[0] == 1, truth)
  # When written: 0.717 before, 1.000 after.
  assert before < 0.75, before
  assert after > 0.99, after
  # Smoothing alone fixes the scattered pixels; only the colour term can
  # place the undecided band, so the boundary stays wrong without it.
  smooth_only = np.asarray(dense_crf.refine(
      probs[None], image[None], strong._replace(bilateral_weight=0.0)))[0]
  outside_band = np.ones_like(truth)
  outside_band[:, 12:16] = False
  assert iou((smooth_only == 1) & outside_band, truth & outside_band) > 0.99
  assert (smooth_only[:, 12:16] == 1).mean() > 0.3  # 0.5 when written
  assert iou(smooth_only == 1, truth) < after - 0.05
  # The cautious defaults help too (0.941 when written).
  default = np.asarray(dense_crf.refine(probs[None], image[None],
                                        dense_crf.DEFAULT))[0]
  assert iou(default == 1, truth) > before + 0.15


def test_refine_is_the_argmax_of_each_image():
  probs = np.stack([two_regions(s, 16)[0] for s in (1, 2)])
  images = np.stack([two_regions(s, 16)[1] for s in (1, 2)])
  labels = np.asarray(dense_crf.refine(probs, images, PARAMS, window=5,
                                       iterations=2))
  for i in range(2):
    q = dense_crf.mean_field(probs[i], images[i], PARAMS, window=5,
                             iterations=2)
    np.testing.assert_array_equal(labels[i], np.argmax(q, -1))


def test_load_params(tmp_path):
  assert dense_crf.load_params(str(tmp_path)) == dense_crf.DEFAULT
  saved = dict(crf=dict(spatial_weight=2.0, spatial_sigma=1.0,
                        bilateral_weight=3.0, bilateral_sigma_xy=4.0,
                        bilateral_sigma_rgb=5.0), window=11)
  (tmp_path / 'refine_search.json').write_text(json.dumps(saved))
  assert dense_crf.load_params(str(tmp_path)) == dense_crf.CrfParams(
      2.0, 1.0, 3.0, 4.0, 5.0)
  (tmp_path / 'refine_search.json').write_text('{"crf": {}}')
  with pytest.raises(errors.ConfigError, match='refine_search.json'):
    dense_crf.load_params(str(tmp_path))
