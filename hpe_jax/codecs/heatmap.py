"""Gaussian heatmaps: keypoint targets and their decoding, in one place.

mmpose calls this a codec: the one object that says how a keypoint becomes
a target and how a prediction becomes a keypoint again, so the two cannot
disagree. `HeatmapCodec` holds the shared settings (``config.codec``: the
Gaussian's sigma and the decoding method; DARK's blur is derived from the
same sigma) and the stride between the input and the heatmap grid.

Everything is array code meant to run inside the jitted steps: the input
pipeline only warps images and keypoints; the [B, H, W, K] targets are made
on the accelerator from [B, K, 2] keypoints, so no host worker spends time
on per-joint loops and no large target tensors cross the bus; decoding,
flip-test averaging and the mapping back to the original image run on the
device too.

Conventions: heatmaps are channels-last, ``[..., H, W, K]``. Coordinates
are ``(x, y)`` in pixel-index coordinates (pixel ``(i, j)`` has its centre
at ``x=j, y=i``) on centre-aligned grids (`hpe_jax.ops.affine`): input
pixel ``x`` is heatmap coordinate ``(x + 0.5) / stride - 0.5``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections

from hpe_jax.ops import affine


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

DECODE_METHODS = ('dark', 'quarter', 'argmax')

# Floor for heatmap values before taking logs: predicted heatmaps can be zero
# or negative, and the log must stay finite.
_LOG_EPS = 1e-10

# For any unimodal peak the maximum lies within about a pixel of the argmax
# sample; a longer DARK step means the local quadratic model is wrong (noise,
# two nearby peaks), so it is clipped.
_MAX_DARK_OFFSET = 1.0


def _sample(flat, width, y, x):
  """Values of ``flat [..., K, H*W]`` at integer ``y, x`` of shape [..., K, *s].

  `y` and `x` must broadcast to a common shape whose leading dims are
  ``flat.shape[:-1]``.
  """
  y, x = jnp.broadcast_arrays(y, x)
  idx = y * width + x
  lead = flat.shape[:-1]
  vals = jnp.take_along_axis(flat, idx.reshape(lead + (-1,)), axis=-1)
  return vals.reshape(idx.shape)


def _extend_log_quadratic(log_maps, radius, axis):
  """Pads `radius` samples on both ends of `axis` by quadratic extrapolation.

  A Gaussian's log is exactly quadratic, so the blur in DARK sees the same
  values beyond the grid as it would have if the Gaussian had continued;
  zero or edge padding instead drags the blurred peak of a keypoint near the
  border by up to a pixel. The extension is capped at the border sample so
  a convex (noisy) profile cannot blow up; for a peak whose argmax is on the
  grid the Gaussian falls outwards anyway and the cap is inactive.
  """
  v = jnp.moveaxis(log_maps, axis, -1)
  steps = jnp.arange(radius, 0, -1, dtype=v.dtype)  # positions -r .. -1

  def before_start(v):
    d1 = v[..., 1:2] - v[..., 0:1]
    d2 = v[..., 2:3] - 2 * v[..., 1:2] + v[..., 0:1]
    ext = v[..., 0:1] - steps * d1 + steps * (steps + 1) / 2 * d2
    return jnp.minimum(ext, v[..., 0:1])

  padded = jnp.concatenate(
      [before_start(v), v, before_start(v[..., ::-1])[..., ::-1]], axis=-1)
  return jnp.moveaxis(padded, -1, axis)


def _modulate(heatmaps, blur_kernel, blur_sigma=None):
  """DARK's distribution modulation: Gaussian blur that keeps each max.

  Without `blur_sigma` the blur's sigma follows the kernel size the way
  OpenCV derives it (kernel 11 -> sigma 2, 17 -> 2.9); kernel 1 means no
  blur.
  """
  radius = (blur_kernel - 1) // 2
  sigma = blur_sigma or 0.3 * ((blur_kernel - 1) * 0.5 - 1) + 0.8
  taps = jnp.exp(-jnp.arange(-radius, radius + 1.0) ** 2 / (2 * sigma ** 2))
  taps = taps / taps.sum()
  num_joints = heatmaps.shape[-1]
  kernel = jnp.broadcast_to(
      jnp.outer(taps, taps)[:, :, None, None],
      (blur_kernel, blur_kernel, 1, num_joints)).astype(heatmaps.dtype)

  log_maps = jnp.log(jnp.maximum(heatmaps, _LOG_EPS))
  log_maps = _extend_log_quadratic(log_maps, radius, axis=-3)
  log_maps = _extend_log_quadratic(log_maps, radius, axis=-2)
  padded = jnp.exp(log_maps)
  batch_shape = padded.shape[:-3]
  blurred = jax.lax.conv_general_dilated(
      padded.reshape((-1,) + padded.shape[-3:]), kernel,
      window_strides=(1, 1), padding='VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=num_joints)
  blurred = blurred.reshape(batch_shape + blurred.shape[-3:])
  # Only the log's derivatives matter for the offset, but rescaling keeps the
  # log floor at the same level relative to the original heatmap.
  old_max = heatmaps.max(axis=(-3, -2), keepdims=True)
  new_max = blurred.max(axis=(-3, -2), keepdims=True)
  return blurred * (old_max / jnp.where(new_max > 0, new_max, 1.0))


def _dark_refine(maps_flat, height, width, x, y):
  """Newton step on the log heatmap: the exact maximum of a sampled Gaussian.

  The 3x3 finite-difference stencil is centred on the argmax, moved inwards
  by one pixel where the argmax lies on the border; for a quadratic (a
  Gaussian's log) the step is exact from any stencil centre.

  Returns:
    ``[..., K, 2]`` (x, y) offsets from the argmax ``(x, y)``.
  """
  log_flat = jnp.log(jnp.maximum(maps_flat, _LOG_EPS))
  cx = jnp.clip(x, 1, width - 2)
  cy = jnp.clip(y, 1, height - 2)
  d = jnp.arange(-1, 2)
  win = _sample(log_flat, width, cy[..., None, None] + d[:, None],
                cx[..., None, None] + d[None, :])  # [..., K, 3(y), 3(x)]
  gx = (win[..., 1, 2] - win[..., 1, 0]) / 2
  gy = (win[..., 2, 1] - win[..., 0, 1]) / 2
  hxx = win[..., 1, 2] - 2 * win[..., 1, 1] + win[..., 1, 0]
  hyy = win[..., 2, 1] - 2 * win[..., 1, 1] + win[..., 0, 1]
  hxy = (win[..., 2, 2] - win[..., 2, 0] - win[..., 0, 2] + win[..., 0, 0]) / 4
  det = hxx * hyy - hxy ** 2
  # Only a negative-definite Hessian describes a maximum; anything else
  # (flat or clipped heatmaps, saddles) keeps the argmax.
  is_peak = (hxx < 0) & (det > 1e-12)
  safe_det = jnp.where(is_peak, det, 1.0)
  step_x = -(hyy * gx - hxy * gy) / safe_det
  step_y = -(hxx * gy - hxy * gx) / safe_det
  off_x = jnp.where(is_peak, cx + step_x - x, 0.0)
  off_y = jnp.where(is_peak, cy + step_y - y, 0.0)
  return jnp.clip(jnp.stack([off_x, off_y], -1),
                  -_MAX_DARK_OFFSET, _MAX_DARK_OFFSET)


def _quarter_offset(maps_flat, height, width, x, y):
  """0.25 px from the argmax towards its higher neighbour, per axis."""
  d = jnp.array([-1, 1])
  xn = jnp.clip(x[..., None] + d, 0, width - 1)
  yn = jnp.clip(y[..., None] + d, 0, height - 1)
  row = _sample(maps_flat, width, y[..., None], xn)
  col = _sample(maps_flat, width, yn, x[..., None])
  interior_x = (x > 0) & (x < width - 1)
  interior_y = (y > 0) & (y < height - 1)
  off_x = jnp.where(interior_x, 0.25 * jnp.sign(row[..., 1] - row[..., 0]), 0.)
  off_y = jnp.where(interior_y, 0.25 * jnp.sign(col[..., 1] - col[..., 0]), 0.)
  return jnp.stack([off_x, off_y], -1)


@functools.partial(jax.jit,
                   static_argnames=('method', 'blur_kernel', 'blur_sigma'))
def decode_heatmaps(heatmaps, method: str = 'dark', blur_kernel: int = 11,
                    blur_sigma: float | None = None):
  """Keypoint locations and confidences from heatmaps.

  Args:
    heatmaps: ``[..., H, W, K]`` heatmaps, H and W at least 3.
    method: ``'argmax'`` (integer peak), ``'quarter'`` (argmax moved 0.25 px
      towards the higher neighbour in x and y separately, not at borders) or
      ``'dark'`` (Zhang et al. 2020, "Distribution-Aware Coordinate
      Representation": blur, log, Newton step -H^-1 g at the argmax; exact
      for Gaussian peaks, borders included).
    blur_kernel: odd DARK modulation kernel size matching the training sigma
      (11 for sigma 2, 17 for sigma 3; 1 disables the blur).
    blur_sigma: the blur's sigma; None derives it from `blur_kernel` as
      OpenCV does. `HeatmapCodec` passes the targets' sigma.

  Returns:
    ``(coords [..., K, 2] (x, y) in heatmap pixel-index coordinates,
    scores [..., K] = the heatmap maximum)``.
  """
  if method not in DECODE_METHODS:
    raise ValueError(f'Unknown decode method {method!r}; '
                     f'known: {DECODE_METHODS}')
  if blur_kernel < 1 or blur_kernel % 2 == 0:
    raise ValueError(f'blur_kernel must be odd and positive: {blur_kernel}')
  height, width = heatmaps.shape[-3:-1]
  if height < 3 or width < 3:
    raise ValueError(f'heatmaps must be at least 3x3: {heatmaps.shape}')
  # Differences of logs lose the sub-pixel offset in half precision.
  heatmaps = jnp.asarray(heatmaps, jnp.result_type(float))

  def channels_first_flat(maps):
    maps = jnp.moveaxis(maps, -1, -3)
    return maps.reshape(maps.shape[:-2] + (height * width,))

  maps_flat = channels_first_flat(heatmaps)
  idx = jnp.argmax(maps_flat, axis=-1)
  scores = jnp.max(maps_flat, axis=-1)
  y, x = jnp.divmod(idx, width)
  coords = jnp.stack([x, y], -1).astype(heatmaps.dtype)
  if method == 'quarter':
    coords += _quarter_offset(maps_flat, height, width, x, y)
  elif method == 'dark':
    modulated = channels_first_flat(
        _modulate(heatmaps, blur_kernel, blur_sigma))
    coords += _dark_refine(modulated, height, width, x, y)
  return coords, scores


def flip_back(flipped_heatmaps, flip_permutation, shift: int = 0):
  """Heatmaps predicted on a mirrored input, mapped back to the original.

  Mirrors the width axis and swaps left/right channels: joint ``k`` of the
  original image is joint ``flip_permutation[k]`` of the mirrored one
  (`Skeleton.flip_permutation`).

  On hpe_jax's centre-aligned grids (`hpe_jax.ops.affine`) mirroring the
  input, ``x' = W_in - 1 - x``, sends heatmap coordinate ``h`` to exactly
  ``W_hm - 1 - h``, which is what mirroring the heatmap array does, so the
  default ``shift=0`` is exact. On a corner-aligned grid (``h = x / s``) the
  mirrored-back heatmap lands ``(s - 1) / s`` heatmap px left of the truth,
  which mmpose approximates by shifting it right by one pixel; ``shift``
  does that (the left columns repeat the edge) for models trained that way.

  Args:
    flipped_heatmaps: ``[..., H, W, K]`` heatmaps of the mirrored inputs.
    flip_permutation: ``[K]`` ints, the skeleton's flip permutation.
    shift: pixels to move the result right.

  Returns:
    ``[..., H, W, K]`` heatmaps aligned with the unmirrored inputs.
  """
  maps = jnp.take(flipped_heatmaps[..., ::-1, :],
                  jnp.asarray(flip_permutation), axis=-1)
  if shift:
    width = maps.shape[-2]
    pad = [(0, 0)] * maps.ndim
    pad[-2] = (shift, 0)
    maps = jnp.pad(maps, pad, mode='edge')[..., :width, :]
  return maps


def flip_test_average(heatmaps, flipped_heatmaps, flip_permutation,
                      shift: int = 0):
  """Mean of the heatmaps and the flipped-back heatmaps of mirrored inputs."""
  return (heatmaps + flip_back(flipped_heatmaps, flip_permutation, shift)) / 2


def heatmap_to_image_coords(coords, affine_image_to_heatmap):
  """Maps ``[..., K, 2]`` heatmap coordinates into the original image.

  Args:
    coords: decoded ``(x, y)`` heatmap coordinates, ``[..., K, 2]``.
    affine_image_to_heatmap: the pipeline's ``[..., 2, 3]`` matrices from
      original-image to heatmap coordinates, batch dims matching `coords`'.

  Returns:
    ``[..., K, 2]`` image pixel-index coordinates.
  """
  coords = jnp.asarray(coords)
  matrix = affine.invert(jnp.asarray(affine_image_to_heatmap, coords.dtype))
  return affine.apply(matrix, coords)


def default_config() -> ml_collections.ConfigDict:
  """``config.codec``: read by the targets and the decoding alike."""
  return ml_collections.ConfigDict(dict(
      sigma=2.0,  # Gaussian standard deviation, in heatmap pixels
      decode='dark',  # 'dark' | 'quarter' | 'argmax'
  ))


@dataclasses.dataclass(frozen=True)
class HeatmapCodec:
  """Keypoints <-> Gaussian heatmaps on a grid `stride` input pixels apart."""
  sigma: float = 2.0
  decode_method: str = 'dark'
  stride: int = 1

  def __post_init__(self):
    if self.decode_method not in DECODE_METHODS:
      raise ValueError(f'codec.decode must be one of {DECODE_METHODS}, got '
                       f'{self.decode_method!r}')
    if not self.sigma > 0:
      raise ValueError(f'codec.sigma must be positive, got {self.sigma}')

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict,
                  stride: int = 1) -> HeatmapCodec:
    return cls(float(cfg.sigma), cfg.decode, int(stride))

  @property
  def blur_kernel(self) -> int:
    """DARK's modulation kernel: a Gaussian of the targets' own sigma (as
    the DARK paper prescribes), truncated at three sigma."""
    return 2 * math.ceil(3 * self.sigma) + 1

  def encode(self, keypoints, visibility, size):
    """`heatmap_targets` of keypoints already on the grid."""
    return heatmap_targets(keypoints, visibility, size, self.sigma)

  def encode_people(self, keypoints, person_valid, size):
    """`people_heatmaps` of every person of full images."""
    return people_heatmaps(keypoints, person_valid, size, self.sigma)

  def decode(self, heatmaps):
    """(coords [..., K, 2] on the grid, scores [..., K])."""
    return decode_heatmaps(heatmaps, self.decode_method, self.blur_kernel,
                           self.sigma)

  def grid_to_input(self, xy):
    """Grid coordinates -> input (model image) pixel coordinates."""
    return (xy + 0.5) * self.stride - 0.5

  def input_to_grid(self, xy):
    """Input pixel coordinates -> grid coordinates."""
    return (xy + 0.5) / self.stride - 0.5
