"""Kalman filtering and Rauch–Tung–Striebel smoothing of keypoint tracks,
batched over people and joints, in JAX.

Each joint moves at a constant velocity disturbed by white acceleration:
the state is (x, y, vx, vy), one frame is `dt`, and the process noise has
spectral density `acceleration_std`² per axis. A detection measures the
position with a noise whose standard deviation is `measurement_std`
divided by the square root of its confidence (a heatmap peak of 0.25 counts
as a measurement twice as far off as one of 1); a missing joint (``valid``
false) is predicted, not updated. Tracks start from a wide prior
(`prior_std` around the image origin, `velocity_prior_std` around rest),
so the first detection sets the position.

`kalman_filter` runs forward with `lax.scan`; `rts_smooth` runs it and then
backward, so each frame uses the frames after it too (offline, e.g. for
propagating annotations). Both are pure functions of fixed-shape arrays
[T, ...] and jit as they are. `smooth_tracks` smooths the people of a
sequence given frame by frame (track ids and poses per frame).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MotionModel:
  """The constant-velocity model (module docstring); pixels and frames."""
  measurement_std: float = 2.0
  acceleration_std: float = 1.0
  prior_std: float = 1000.0
  # Joints move tens of pixels a frame, not thousands; a tighter velocity
  # prior also keeps float32 smoothing of the first frames exact.
  velocity_prior_std: float = 50.0
  dt: float = 1.0
  min_confidence: float = 1e-3

  def transition(self) -> jax.Array:
    dt = self.dt
    return jnp.array([[1, 0, dt, 0], [0, 1, 0, dt], [0, 0, 1, 0],
                      [0, 0, 0, 1]], jnp.float32)

  def process_noise(self) -> jax.Array:
    dt, q = self.dt, self.acceleration_std**2
    # Per axis: [[dt^3/3, dt^2/2], [dt^2/2, dt]] * q; axes independent.
    pos, cross, vel = q * dt**3 / 3, q * dt**2 / 2, q * dt
    return jnp.array([[pos, 0, cross, 0], [0, pos, 0, cross],
                      [cross, 0, vel, 0], [0, cross, 0, vel]], jnp.float32)

  def prior(self, batch_shape) -> tuple[jax.Array, jax.Array]:
    mean = jnp.zeros((*batch_shape, 4), jnp.float32)
    stds = jnp.array([self.prior_std] * 2 + [self.velocity_prior_std] * 2,
                     jnp.float32)
    cov = jnp.broadcast_to(jnp.diag(stds**2), (*batch_shape, 4, 4))
    return mean, cov


_H = jnp.array([[1, 0, 0, 0], [0, 1, 0, 0]], jnp.float32)


def _update(mean, cov, xy, confidence, valid, model: MotionModel):
  """One Kalman update of [..., 4] / [..., 4, 4] with xy [..., 2]."""
  variance = model.measurement_std**2 / jnp.maximum(confidence,
                                                     model.min_confidence)
  r = variance[..., None, None] * jnp.eye(2, dtype=jnp.float32)
  s = _H @ cov @ _H.T + r
  gain = cov @ _H.T @ jnp.linalg.inv(s)
  innovation = xy - (_H @ mean[..., None])[..., 0]
  new_mean = mean + (gain @ innovation[..., None])[..., 0]
  # Joseph form: stays symmetric and positive in float32.
  a = jnp.eye(4, dtype=jnp.float32) - gain @ _H
  new_cov = a @ cov @ jnp.swapaxes(a, -1, -2) + gain @ r @ jnp.swapaxes(
      gain, -1, -2)
  keep = valid[..., None]
  return (jnp.where(keep, new_mean, mean),
          jnp.where(keep[..., None], new_cov, cov))


def _forward(xy, confidence, valid, model: MotionModel):
  """Filtered and predicted (mean, cov) of every frame."""
  f, q = model.transition(), model.process_noise()
  mean, cov = model.prior(xy.shape[1:-1])

  def step(carry, frame):
    mean, cov = carry
    predicted = ((f @ mean[..., None])[..., 0], f @ cov @ f.T + q)
    filtered = _update(*predicted, *frame, model)
    return filtered, (filtered, predicted)

  # The prior is the prediction of frame 0: no motion before it.
  first = _update(mean, cov, xy[0], confidence[0], valid[0], model)
  _, (filtered, predicted) = jax.lax.scan(
      step, first, (xy[1:], confidence[1:], valid[1:]))
  stack = lambda a, b: jnp.concatenate([a[None], b])
  return ((stack(first[0], filtered[0]), stack(first[1], filtered[1])),
          (stack(mean, predicted[0]), stack(cov, predicted[1])))


def kalman_filter(xy, confidence, valid, model: MotionModel = MotionModel()
                  ) -> tuple[jax.Array, jax.Array]:
  """Filtered positions [T, ..., 2] and their variances [T, ..., 2].

  Args:
    xy: [T, ..., 2] detected positions (any batch dims: people, joints).
    confidence: [T, ...] detection confidences (e.g. heatmap peaks).
    valid: [T, ...] bool, false for joints not detected in a frame.
    model: the motion model.
  """
  (mean, cov), _ = _forward(jnp.asarray(xy, jnp.float32),
                            jnp.asarray(confidence, jnp.float32),
                            jnp.asarray(valid, bool), model)
  return mean[..., :2], jnp.diagonal(cov, axis1=-2, axis2=-1)[..., :2]


def rts_smooth(xy, confidence, valid, model: MotionModel = MotionModel()
               ) -> tuple[jax.Array, jax.Array]:
  """Smoothed positions [T, ..., 2] and variances: `kalman_filter`'s
  arguments, every frame estimated from the whole track."""
  (mean, cov), (pred_mean, pred_cov) = _forward(
      jnp.asarray(xy, jnp.float32), jnp.asarray(confidence, jnp.float32),
      jnp.asarray(valid, bool), model)
  f = model.transition()

  def step(carry, frame):
    next_mean, next_cov = carry
    mean, cov, pred_mean, pred_cov = frame
    gain = cov @ f.T @ jnp.linalg.inv(pred_cov)
    mean = mean + (gain @ (next_mean - pred_mean)[..., None])[..., 0]
    cov = cov + gain @ (next_cov - pred_cov) @ jnp.swapaxes(gain, -1, -2)
    return (mean, cov), (mean, cov)

  # Frame t's gain uses frame t + 1's prediction.
  _, (smooth_mean, smooth_cov) = jax.lax.scan(
      step, (mean[-1], cov[-1]),
      (mean[:-1], cov[:-1], pred_mean[1:], pred_cov[1:]), reverse=True)
  smooth_mean = jnp.concatenate([smooth_mean, mean[-1:]])
  smooth_cov = jnp.concatenate([smooth_cov, cov[-1:]])
  return (smooth_mean[..., :2],
          jnp.diagonal(smooth_cov, axis1=-2, axis2=-1)[..., :2])


def smooth_tracks(track_ids, xy, confidence, valid,
                  model: MotionModel = MotionModel()) -> list[np.ndarray]:
  """`rts_smooth` of tracks given frame by frame.

  Args:
    track_ids: per frame, the track ids [N_t] of its people.
    xy: per frame, their joints [N_t, K, 2].
    confidence: per frame, the joints' confidences [N_t, K].
    valid: per frame, which joints were measured [N_t, K].
    model: the motion model.

  Returns:
    Per frame, the smoothed joints [N_t, K, 2]; a joint never measured in
    its track keeps its positions (the smoother has nothing to go on).
  """
  ids = sorted({int(i) for frame in track_ids for i in frame})
  if not ids:
    return [np.asarray(x, np.float32).copy() for x in xy]
  column = {t: c for c, t in enumerate(ids)}
  cols = [[column[int(i)] for i in frame] for frame in track_ids]
  k = next(np.shape(x)[1] for x in xy if len(x))
  shape = (len(cols), len(ids), k)
  stacked = np.zeros((*shape, 2), np.float32)
  conf = np.zeros(shape, np.float32)
  measured = np.zeros(shape, bool)
  for t, c in enumerate(cols):
    stacked[t, c], conf[t, c], measured[t, c] = xy[t], confidence[t], valid[t]
  smoothed, _ = rts_smooth(stacked, conf, measured, model)
  smoothed = np.where(measured.any(0)[..., None], np.asarray(smoothed),
                      stacked)
  return [smoothed[t, c] for t, c in enumerate(cols)]
