"""The Kalman filter and RTS smoother of keypoint tracks against a
hand-computed step and a plain numpy loop of the textbook equations, and
what smoothing does to noisy and gappy tracks."""

import jax
import numpy as np
import pytest

from hpe_jax.video import smoothing


def numpy_filter_and_smoother(xy, conf, valid, model):
  """One joint at a time, the textbook equations in float64."""
  f = np.array(model.transition(), np.float64)
  q = np.array(model.process_noise(), np.float64)
  h = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float64)
  t_len = len(xy)
  means, covs, pred_means, pred_covs = [], [], [], []
  mean = np.zeros(4)
  cov = np.diag([model.prior_std**2] * 2 + [model.velocity_prior_std**2] * 2)
  for t in range(t_len):
    if t:
      mean, cov = f @ mean, f @ cov @ f.T + q
    pred_means.append(mean)
    pred_covs.append(cov)
    if valid[t]:
      r = np.eye(2) * model.measurement_std**2 / max(conf[t],
                                                      model.min_confidence)
      gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + r)
      mean = mean + gain @ (xy[t] - h @ mean)
      cov = (np.eye(4) - gain @ h) @ cov
    means.append(mean)
    covs.append(cov)
  smooth = [means[-1]]
  smooth_cov = [covs[-1]]
  for t in range(t_len - 2, -1, -1):
    gain = covs[t] @ f.T @ np.linalg.inv(pred_covs[t + 1])
    smooth.insert(0, means[t] + gain @ (smooth[0] - pred_means[t + 1]))
    smooth_cov.insert(0, covs[t] + gain @ (smooth_cov[0] - pred_covs[t + 1])
                      @ gain.T)
  return (np.array(means)[:, :2], np.array(covs)[:, [0, 1], [0, 1]],
          np.array(smooth)[:, :2], np.array(smooth_cov)[:, [0, 1], [0, 1]])


def test_first_update_by_hand():
  model = smoothing.MotionModel(measurement_std=2.0, prior_std=10.0)
  mean, var = smoothing.kalman_filter(np.array([[[4.0, -6.0]]]),
                                      np.ones((1, 1)), np.ones((1, 1), bool),
                                      model)
  # Gain 100 / (100 + 4); variance 100 * 4 / 104.
  np.testing.assert_allclose(mean[0, 0], [4 * 100 / 104, -6 * 100 / 104],
                             rtol=1e-5)
  np.testing.assert_allclose(var[0, 0], [400 / 104] * 2, rtol=1e-5)
  # A confidence of 0.25 doubles the measurement's standard deviation.
  mean, _ = smoothing.kalman_filter(np.array([[[4.0, 0.0]]]),
                                    np.full((1, 1), 0.25),
                                    np.ones((1, 1), bool), model)
  np.testing.assert_allclose(mean[0, 0, 0], 4 * 100 / 116, rtol=1e-5)


def test_matches_the_textbook_equations_batched_over_people_and_joints():
  rng = np.random.default_rng(0)
  t_len, people, joints = 20, 2, 3
  xy = (rng.uniform(0, 200, (1, people, joints, 2)) +
        np.arange(t_len)[:, None, None, None] * rng.uniform(-3, 3, 2) +
        rng.normal(0, 2, (t_len, people, joints, 2)))
  conf = rng.uniform(0.1, 1.0, (t_len, people, joints))
  valid = rng.random((t_len, people, joints)) > 0.3
  model = smoothing.MotionModel(measurement_std=2.0, acceleration_std=0.5,
                                prior_std=300.0)
  filtered = jax.jit(smoothing.kalman_filter, static_argnums=3)(
      xy, conf, valid, model)
  smoothed = jax.jit(smoothing.rts_smooth, static_argnums=3)(
      xy, conf, valid, model)
  for p in range(people):
    for k in range(joints):
      want = numpy_filter_and_smoother(xy[:, p, k], conf[:, p, k],
                                       valid[:, p, k], model)
      got = (filtered[0][:, p, k], filtered[1][:, p, k],
             smoothed[0][:, p, k], smoothed[1][:, p, k])
      # Before a joint's first detection there is only the (very wide)
      # prior, which float32 carries roughly; from it on, closely.
      first = np.argmax(valid[:, p, k])
      for g, w in zip(got, want):
        np.testing.assert_allclose(g[first:], w[first:], rtol=2e-3,
                                   atol=2e-2)


def test_smoothing_reduces_noise_and_bridges_missing_frames():
  rng = np.random.default_rng(1)
  t_len = 60
  truth = np.stack([50 + 2.0 * np.arange(t_len),
                    80 + 20 * np.sin(np.arange(t_len) / 10)], -1)
  noisy = truth + rng.normal(0, 3.0, truth.shape)
  valid = np.ones(t_len, bool)
  valid[25:32] = False  # seven frames without a detection
  noisy[~valid] = 0.0  # what a missing joint holds
  model = smoothing.MotionModel(measurement_std=3.0, acceleration_std=0.5)
  args = (noisy[:, None], np.ones((t_len, 1)), valid[:, None], model)
  filtered = np.asarray(smoothing.kalman_filter(*args)[0][:, 0])
  smoothed = np.asarray(smoothing.rts_smooth(*args)[0][:, 0])
  error = lambda xy, m: np.sqrt(((xy - truth)[m] ** 2).sum(-1).mean())
  seen = valid.copy()
  seen[:5] = False  # the filter's start-up
  raw = error(noisy, seen)
  assert error(smoothed, seen) < error(filtered, seen) < raw
  assert error(smoothed, seen) < 0.6 * raw
  # Through the gap the smoother interpolates from both sides.
  assert error(smoothed, ~valid) < 4.0
  assert error(smoothed, ~valid) < error(filtered, ~valid)


@pytest.mark.parametrize('t_len', [1, 2])
def test_short_tracks(t_len):
  xy = np.full((t_len, 1, 2), 7.0)
  mean, _ = smoothing.rts_smooth(xy, np.ones((t_len, 1)),
                                 np.ones((t_len, 1), bool))
  np.testing.assert_allclose(mean, xy, atol=0.05)
