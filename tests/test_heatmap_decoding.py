"""Tests for hpe_jax.codecs.heatmap (decoding) against independently drawn peaks."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.codecs import heatmap as hd
from hpe_jax.data import skeletons
from hpe_jax.ops import affine

H, W = 64, 48


def _gaussians(points, sigma, height=H, width=W):
  """[..., K, 2] (x, y) points -> [..., height, width, K] unit-peak Gaussians."""
  points = np.asarray(points, np.float64)
  x = np.arange(width)[:, None]
  y = np.arange(height)[:, None, None]
  kx = points[..., None, None, :, 0]
  ky = points[..., None, None, :, 1]
  return np.exp(-((x - kx) ** 2 + (y - ky) ** 2) / (2 * sigma ** 2))


def _uniform_points(rng, n, low, high_margin):
  """[n, 2] points with x in [low, W - 1 - high_margin], same for y."""
  return np.stack([rng.uniform(low, W - 1 - high_margin, n),
                   rng.uniform(low, H - 1 - high_margin, n)], -1)


def _decode(heatmaps, method, **kwargs):
  coords, scores = hd.decode_heatmaps(jnp.asarray(heatmaps, jnp.float32),
                                      method=method, **kwargs)
  return np.asarray(coords), np.asarray(scores)


def _border_coords(rng, n, size):
  """n coordinates within 2.5 px of either end of [0, size - 1], some past."""
  offset = rng.uniform(-0.45, 2.5, n)
  return np.where(rng.integers(0, 2, n) == 1, size - 1 - offset, offset)


@pytest.mark.parametrize('sigma', [1.0, 1.5, 2.0, 3.0])
def test_dark_is_exact_for_gaussians_everywhere(sigma):
  rng = np.random.default_rng(int(sigma * 10))
  n = 60
  x_any, y_any = _uniform_points(rng, n, -0.45, -0.45).T
  x_edge, y_edge = _border_coords(rng, n, W), _border_coords(rng, n, H)
  points = np.concatenate([
      _uniform_points(rng, 200, -0.45, -0.45),  # Anywhere.
      np.stack([x_edge, y_any], -1),  # Left and right borders.
      np.stack([x_any, y_edge], -1),  # Top and bottom borders.
      np.stack([x_edge, y_edge], -1)])  # Corners.
  coords, _ = _decode(_gaussians(points, sigma), 'dark')
  assert np.abs(coords - points).max() < 0.01


def test_dark_with_other_kernels_and_peak_heights():
  rng = np.random.default_rng(1)
  points = _uniform_points(rng, 50, -0.4, -0.4)
  heatmaps = 0.3 * _gaussians(points, 3.0)
  for kernel in (1, 17):
    coords, scores = _decode(heatmaps, 'dark', blur_kernel=kernel)
    assert np.abs(coords - points).max() < 0.01
    np.testing.assert_allclose(scores, heatmaps.max((0, 1)), rtol=1e-6)


def test_quarter_and_argmax_error_bounds():
  rng = np.random.default_rng(2)
  for sigma in (1.0, 2.0, 3.0):
    # Quarter refinement needs both neighbours, so stay off the border.
    points = _uniform_points(rng, 300, 0.5, 0.5)
    heatmaps = _gaussians(points, sigma)
    quarter, _ = _decode(heatmaps, 'quarter')
    argmax, _ = _decode(heatmaps, 'argmax')
    assert np.abs(quarter - points).max() <= 0.25 + 1e-6
    assert np.linalg.norm(quarter - points, axis=-1).max() <= 0.3536
    assert np.abs(argmax - points).max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(argmax, np.round(points))
    # The quarter step goes from the argmax towards the true peak.
    true_step = points - argmax
    clear = np.abs(true_step) > 1e-3
    np.testing.assert_array_equal(np.sign(quarter - argmax)[clear],
                                  np.sign(true_step)[clear])


@pytest.mark.parametrize('method', hd.DECODE_METHODS)
def test_integer_peaks_decode_exactly(method):
  points = np.array([[0, 0], [W - 1, H - 1], [10, 20], [0, 33], [47, 5]],
                    np.float64)
  coords, scores = _decode(_gaussians(points, 2.0), method)
  # DARK's truncated blur kernel costs it ~1e-3 px on the border.
  np.testing.assert_allclose(coords, points, atol=0.01 if method == 'dark'
                             else 0)
  np.testing.assert_allclose(scores, 1.0, rtol=1e-6)


@pytest.mark.parametrize('method', hd.DECODE_METHODS)
def test_batched_matches_one_by_one_and_jit(method):
  rng = np.random.default_rng(3)
  b, n, k = 2, 3, 4
  points = _uniform_points(rng, b * n * k, 0, 0).reshape(b, n, k, 2)
  heatmaps = _gaussians(points, 2.0) * rng.uniform(0.2, 1.0, (b, n, 1, 1, k))
  heatmaps = heatmaps.astype(np.float32)
  coords, scores = _decode(heatmaps, method)
  assert coords.shape == (b, n, k, 2) and scores.shape == (b, n, k)
  for i in range(b):
    for j in range(n):
      c, s = _decode(heatmaps[i, j], method)
      np.testing.assert_allclose(coords[i, j], c, atol=1e-5)
      np.testing.assert_allclose(scores[i, j], s, rtol=1e-6)

  jitted = jax.jit(lambda h: hd.decode_heatmaps(h, method=method))
  jit_coords, jit_scores = jitted(jnp.asarray(heatmaps))
  np.testing.assert_allclose(np.asarray(jit_coords), coords, atol=1e-5)
  np.testing.assert_allclose(np.asarray(jit_scores), scores, rtol=1e-6)


def test_flat_and_negative_heatmaps_stay_finite():
  heatmaps = np.zeros([8, 8, 2], np.float32)
  heatmaps[..., 1] = -1.0
  coords, scores = _decode(heatmaps, 'dark')
  np.testing.assert_array_equal(coords, 0.0)
  np.testing.assert_array_equal(scores, [0.0, -1.0])


def test_rejects_unknown_method_and_even_kernel():
  heatmaps = jnp.zeros([8, 8, 1])
  with pytest.raises(ValueError, match='method'):
    hd.decode_heatmaps(heatmaps, method='soft')
  with pytest.raises(ValueError, match='odd'):
    hd.decode_heatmaps(heatmaps, blur_kernel=10)


def _mirrored_input_heatmaps(points_in, stride, width_in, skeleton, sigma):
  """Heatmaps a perfect model predicts on the mirrored input image."""
  to_heatmap = affine.stride_affine(stride)
  mirrored = points_in.copy()
  mirrored[..., 0] = width_in - 1 - mirrored[..., 0]
  # Joint k of the person shows up as joint perm[k] in the mirror image.
  relabelled = mirrored[..., skeleton.flip_permutation, :]
  return _gaussians(affine.apply(to_heatmap, relabelled), sigma)


def test_flip_back_is_exact_on_centre_aligned_grid():
  skeleton = skeletons.COCO17
  stride = 4
  rng = np.random.default_rng(4)
  points_in = np.stack([rng.uniform(10, W * stride - 10, (2, 17)),
                        rng.uniform(10, H * stride - 10, (2, 17))], -1)
  heatmaps = _gaussians(affine.apply(affine.stride_affine(stride), points_in),
                        2.0)
  flipped = _mirrored_input_heatmaps(points_in, stride, W * stride, skeleton,
                                     2.0)
  back = np.asarray(hd.flip_back(flipped, skeleton.flip_permutation))
  np.testing.assert_allclose(back, heatmaps, atol=1e-6)
  averaged = hd.flip_test_average(heatmaps, flipped, skeleton.flip_permutation)
  np.testing.assert_allclose(np.asarray(averaged), heatmaps, atol=1e-6)

  shifted = np.asarray(hd.flip_back(flipped, skeleton.flip_permutation,
                                    shift=1))
  np.testing.assert_allclose(shifted[..., 1:, :], back[..., :-1, :])
  np.testing.assert_allclose(shifted[..., 0, :], back[..., 0, :])
  coords, _ = _decode(shifted, 'dark')
  expected = affine.apply(affine.stride_affine(stride), points_in)
  np.testing.assert_allclose(coords[..., 0], expected[..., 0] + 1, atol=0.01)
  np.testing.assert_allclose(coords[..., 1], expected[..., 1], atol=0.01)


def test_flip_back_swaps_channels_by_permutation():
  skeleton = skeletons.COCO17
  k = skeleton.num_joints
  marked = np.broadcast_to(np.arange(k, dtype=np.float32), (4, 5, k))
  back = np.asarray(hd.flip_back(marked, skeleton.flip_permutation))
  np.testing.assert_array_equal(back[0, 0], skeleton.flip_permutation)
  assert back[0, 0, skeleton.index('left_wrist')] == skeleton.index(
      'right_wrist')
  assert back[0, 0, skeleton.index('nose')] == skeleton.index('nose')


def test_round_trip_image_to_heatmap_and_back():
  rng = np.random.default_rng(6)
  stride, input_size = 4, (W * 4, H * 4)
  num_people, k = 3, 17
  matrices = []
  for _ in range(num_people):
    box = np.array([rng.uniform(0, 300), rng.uniform(0, 200), 0, 0])
    box[2:] = box[:2] + rng.uniform(60, 250, 2)
    center, size = affine.box_to_center_size(box, input_size[0] / input_size[1],
                                             padding=1.25)
    crop = affine.crop_affine(center, size, input_size,
                              rotation_deg=rng.uniform(-30, 30),
                              flip=bool(rng.integers(2)))
    matrices.append(affine.compose(affine.stride_affine(stride), crop))
  matrices = np.stack(matrices)
  # Image keypoints drawn where the heatmap can see them.
  points_img = affine.apply(
      affine.invert(matrices),
      _uniform_points(rng, num_people * k, 0, 0).reshape(num_people, k, 2))
  points_hm = affine.apply(matrices, points_img)
  coords, _ = hd.decode_heatmaps(
      jnp.asarray(_gaussians(points_hm, 2.0), jnp.float32), method='dark')
  recovered = jax.jit(hd.heatmap_to_image_coords)(coords, matrices)
  assert recovered.shape == (num_people, k, 2)
  np.testing.assert_allclose(np.asarray(recovered), points_img, atol=0.05)


def test_codec_derives_darks_blur_from_its_sigma():
  """The codec blurs with a Gaussian of its own sigma (the DARK paper's
  choice). On clean sigma-1 Gaussians both it and the old fixed kernel
  (11, made for sigma 2) are within a thousandth of a pixel; on sigma-1
  peaks with noise, as a trained model predicts them, the matched blur
  is clearly closer."""
  codec = hd.HeatmapCodec(sigma=1.0, decode_method='dark')
  assert codec.blur_kernel == 7
  assert hd.HeatmapCodec(sigma=2.0).blur_kernel == 13
  rng = np.random.default_rng(7)
  points = _uniform_points(rng, 300, -0.45, -0.45)
  clean = _gaussians(points, 1.0)
  noisy = clean + 0.03 * rng.standard_normal(clean.shape)

  def error(heatmaps, decode):
    coords, _ = decode(jnp.asarray(heatmaps, jnp.float32))
    return np.abs(np.asarray(coords) - points)

  fixed = functools.partial(hd.decode_heatmaps, method='dark',
                            blur_kernel=11)
  assert error(clean, codec.decode).max() < 2e-3
  assert error(clean, fixed).max() < 2e-3
  assert (error(noisy, codec.decode).mean() <
          0.8 * error(noisy, fixed).mean())


def test_codec_grid_and_input_coordinates_round_trip():
  codec = hd.HeatmapCodec(stride=4)
  xy = np.array([[0.0, 0.0], [15.0, 7.5]])
  # Input pixel 1.5 is the centre of the first 4-pixel cell: grid 0.
  np.testing.assert_allclose(codec.input_to_grid(np.array([1.5, 1.5])), 0.0)
  np.testing.assert_allclose(codec.input_to_grid(codec.grid_to_input(xy)),
                             xy)
  with pytest.raises(ValueError, match='codec.decode'):
    hd.HeatmapCodec(decode_method='soft')
