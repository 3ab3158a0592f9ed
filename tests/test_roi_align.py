"""RoIAlign, RoI pasting and label crops against explicit per-sample loops."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.ops import roi_align as ra

H, W, C = 12, 16, 3

# Jitted once per shape: far cheaper on CPU than eager op-by-op dispatch.
roi_align = jax.jit(ra.roi_align,
                    static_argnames=('output_size', 'sampling_ratio',
                                     'aligned'))
paste_rois = jax.jit(ra.paste_rois, static_argnames='image_size')
crop_labels = jax.jit(ra.crop_labels, static_argnames='output_size')


def bilinear_taps(y, x, height, width):
  """(row, col, weight) taps of one sample, as torchvision's CPU kernel."""
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return []
  y, x = max(y, 0.0), max(x, 0.0)
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_high = y_low = height - 1
    y = float(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_high = x_low = width - 1
    x = float(x_low)
  else:
    x_high = x_low + 1
  ly, lx = y - y_low, x - x_low
  hy, hx = 1.0 - ly, 1.0 - lx
  return [(y_low, x_low, hy * hx), (y_low, x_high, hy * lx),
          (y_high, x_low, ly * hx), (y_high, x_high, ly * lx)]


def reference_samples(box, out_hw, scale, ratio, aligned):
  """Yields (i, j, row, col, weight) for every tap of every cell of a box."""
  out_h, out_w = out_hw
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = (float(v) * scale - offset for v in box)
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:
    roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
  bin_h, bin_w = roi_h / out_h, roi_w / out_w
  for i in range(out_h):
    for j in range(out_w):
      for iy in range(ratio):
        y = y1 + i * bin_h + (iy + 0.5) * bin_h / ratio
        for ix in range(ratio):
          x = x1 + j * bin_w + (ix + 0.5) * bin_w / ratio
          for row, col, wt in bilinear_taps(y, x, H, W):
            yield i, j, row, col, wt / ratio**2


def reference_roi_align(features, boxes, out_hw, scale, ratio, aligned):
  b, k = boxes.shape[:2]
  out = np.zeros((b, k) + tuple(out_hw) + (features.shape[-1],))
  for bi in range(b):
    for ki in range(k):
      for i, j, row, col, wt in reference_samples(
          boxes[bi, ki], out_hw, scale, ratio, aligned):
        out[bi, ki, i, j] += wt * features[bi, row, col]
  return out


def reference_adjoint(cotangent, boxes, out_hw, scale, ratio, aligned):
  """Gradient of sum(roi_align * cotangent) w.r.t. features, by scattering."""
  b, k = boxes.shape[:2]
  grad = np.zeros((b, H, W, cotangent.shape[-1]))
  for bi in range(b):
    for ki in range(k):
      for i, j, row, col, wt in reference_samples(
          boxes[bi, ki], out_hw, scale, ratio, aligned):
        grad[bi, row, col] += wt * cotangent[bi, ki, i, j]
  return grad


def make_boxes(scale, seed=0):
  """Random boxes plus partly/wholly outside, tiny and degenerate ones."""
  rng = np.random.default_rng(seed)
  img_h, img_w = H / scale, W / scale
  corners = rng.uniform(-0.3, 1.3, size=(2, 2, 2, 2)) * [img_w, img_h]
  random = np.concatenate([corners.min(axis=2), corners.max(axis=2)], -1)
  fixed = np.array([
      [-3.1, 2.2, 5.3, 9.7],                        # partly outside
      [img_w + 3.0, 1.0, img_w + 9.0, 4.0],         # wholly outside
      [4.37, 5.21, 4.47, 5.26],                     # tiny
      [2.0, 3.0, 2.0, 3.0],                         # zero size
      [0.0, 0.0, img_w, img_h],                     # whole map
  ])
  boxes = np.stack([np.concatenate([random[0], fixed[:3]]),
                    np.concatenate([random[1], fixed[2:]])])
  return boxes.astype(np.float32)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('ratio', [1, 2])
@pytest.mark.parametrize('scale', [1.0, 0.25])
def test_matches_loop_reference(aligned, ratio, scale):
  rng = np.random.default_rng(1)
  # Values in [0, 1) keep the slope small, so float32 sample positions
  # cost well under 1e-5.
  features = rng.uniform(size=(2, H, W, C)).astype(np.float32)
  boxes = make_boxes(scale)
  got = roi_align(features, jnp.asarray(boxes), (3, 5),
                     spatial_scale=scale, sampling_ratio=ratio,
                     aligned=aligned)
  want = reference_roi_align(features, boxes, (3, 5), scale, ratio, aligned)
  assert got.shape == (2, 5, 3, 5, C) and got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_reference_covers_the_edge_cases():
  # Guards the test itself: the fixed boxes do hit the zero and clamp rules.
  boxes = make_boxes(1.0)
  outside = list(reference_samples(boxes[0, 3], (3, 5), 1.0, 2, True))
  assert not outside
  whole = list(reference_samples(boxes[1, 4], (3, 5), 1.0, 2, True))
  assert {row for _, _, row, _, _ in whole} == set(range(H))


def ramp():
  """[1, 6, 6, 1] map whose value is the column index."""
  return jnp.broadcast_to(jnp.arange(6.0)[None, None, :, None], (1, 6, 6, 1))


@pytest.mark.parametrize('ratio', [1, 2, 3])
def test_ramp_aligned_by_hand(ratio):
  # Aligned box [1, 3]: start 0.5, bin 1, so the cells' sample means sit at
  # pixel indices 1 and 2; a linear map reads them exactly.
  got = roi_align(ramp(), jnp.array([[[1.0, 1.0, 3.0, 3.0]]]), 2,
                     sampling_ratio=ratio)
  # Thirds are not exact in float32, hence the tolerance.
  np.testing.assert_allclose(got[0, 0, ..., 0], [[1.0, 2.0], [1.0, 2.0]],
                             atol=1e-6)


def test_ramp_not_aligned_by_hand():
  # Without the half-pixel shift the cells are centred on 1.5 and 2.5.
  got = roi_align(ramp(), jnp.array([[[1.0, 1.0, 3.0, 3.0]]]), 2,
                     aligned=False)
  np.testing.assert_array_equal(got[0, 0, ..., 0], [[1.5, 2.5], [1.5, 2.5]])


def test_ramp_clamped_at_the_left_edge_by_hand():
  # Aligned box [0, 2]: cell 0 samples x = -0.25 (clamped to 0, reads 0)
  # and 0.25, mean 0.125; cell 1 samples 0.75 and 1.25, mean 1.
  got = roi_align(ramp(), jnp.array([[[0.0, 0.0, 2.0, 2.0]]]), 2)
  np.testing.assert_array_equal(got[0, 0, ..., 0],
                                [[0.125, 1.0], [0.125, 1.0]])


def test_samples_beyond_one_pixel_outside_read_zero():
  ones = jnp.ones((1, 6, 6, 1))
  # Aligned box x in [-2, 0], one sample per cell: x = -2 reads zero, x = -1
  # is still inside the margin and is clamped onto the map.
  got = roi_align(ones, jnp.array([[[-2.0, 2.0, 0.0, 4.0]]]), 2,
                     sampling_ratio=1)
  np.testing.assert_array_equal(got[0, 0, ..., 0], [[0.0, 1.0], [0.0, 1.0]])
  # Same on the far side: x = W is inside the margin, x = W + 1 is not.
  got = roi_align(ones, jnp.array([[[6.0, 2.0, 8.0, 4.0]]]), 2,
                     sampling_ratio=1)
  np.testing.assert_array_equal(got[0, 0, ..., 0], [[1.0, 0.0], [1.0, 0.0]])
  far = roi_align(ones, jnp.array([[[8.0, -9.0, 12.0, -4.0]]]), (3, 4))
  np.testing.assert_array_equal(far, 0.0)


def test_constant_map_reads_the_constant_inside():
  features = jnp.full((1, H, W, 2), 2.5)
  boxes = jnp.array([[[0.0, 0.0, W, H], [3.3, 1.2, 9.9, 7.7],
                      [-0.4, -0.4, 5.0, 5.0]]])
  got = roi_align(features, boxes, (4, 3), sampling_ratio=2)
  np.testing.assert_allclose(got, 2.5, rtol=1e-6)


def test_matches_torchvision():
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  rng = np.random.default_rng(2)
  features = rng.normal(size=(2, H, W, C)).astype(np.float32)
  boxes = make_boxes(0.25)
  rois = np.concatenate(
      [np.repeat(np.arange(2.0), boxes.shape[1])[:, None],
       boxes.reshape(-1, 4)], axis=1).astype(np.float32)
  for aligned in (True, False):
    want = torchvision.ops.roi_align(
        torch.from_numpy(features.transpose(0, 3, 1, 2)),
        torch.from_numpy(rois), (3, 5), spatial_scale=0.25,
        sampling_ratio=2, aligned=aligned).numpy()
    got = roi_align(features, boxes, (3, 5), spatial_scale=0.25,
                       sampling_ratio=2, aligned=aligned)
    np.testing.assert_allclose(
        np.asarray(got).reshape(-1, 3, 5, C).transpose(0, 3, 1, 2), want,
        atol=1e-5, rtol=1e-5)


def test_rejects_adaptive_sampling_ratio():
  with pytest.raises(ValueError, match='static shape'):
    roi_align(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 1, 4)), 2,
              sampling_ratio=0)


def test_gradient_is_the_reference_adjoint():
  rng = np.random.default_rng(3)
  features = rng.uniform(size=(2, H, W, C)).astype(np.float32)
  boxes = make_boxes(1.0)
  cotangent = rng.normal(size=(2, 5, 3, 5, C)).astype(np.float32)
  align = functools.partial(ra.roi_align, boxes=jnp.asarray(boxes),
                            output_size=(3, 5), sampling_ratio=2)
  grad = jax.jit(jax.grad(lambda f: jnp.sum(align(f) * cotangent)))(
      features)
  want = reference_adjoint(cotangent, boxes, (3, 5), 1.0, 2, True)
  np.testing.assert_allclose(grad, want, atol=1e-5, rtol=1e-5)


def test_gradient_of_an_interior_box_sums_to_the_cell_count():
  # Every sample of an interior box has bilinear weights summing to 1, so a
  # constant cotangent spreads out_h * out_w units per channel.
  features = jnp.zeros((1, H, W, 2))
  boxes = jnp.array([[[2.3, 1.9, 11.2, 9.4]]])
  grad = jax.jit(jax.grad(lambda f: jnp.sum(ra.roi_align(f, boxes, (3, 4)))))(
      features)
  assert bool(jnp.all(jnp.isfinite(grad)))
  np.testing.assert_allclose(grad.sum(axis=(0, 1, 2)), [12.0, 12.0],
                             rtol=1e-6)


def test_gradient_to_boxes_is_finite():
  features = jnp.asarray(
      np.random.default_rng(4).uniform(size=(2, H, W, C)), jnp.float32)
  boxes = jnp.asarray(make_boxes(1.0))
  grad = jax.jit(jax.grad(
      lambda b: jnp.sum(ra.roi_align(features, b, 3) ** 2)))(boxes)
  assert bool(jnp.all(jnp.isfinite(grad)))
  assert float(jnp.abs(grad).sum()) > 0.0


def test_jit_matches_eager_and_keeps_dtype():
  features = jnp.asarray(
      np.random.default_rng(5).normal(size=(2, H, W, C)), jnp.float32)
  boxes = jnp.asarray(make_boxes(0.25))
  kwargs = dict(output_size=(3, 5), spatial_scale=0.25, sampling_ratio=2,
                aligned=False)
  jitted = jax.jit(functools.partial(ra.roi_align, **kwargs))
  np.testing.assert_allclose(jitted(features, boxes),
                             ra.roi_align(features, boxes, **kwargs),
                             atol=1e-6)
  half = jitted(features.astype(jnp.bfloat16), boxes)
  assert half.dtype == jnp.bfloat16


def inside_mask(box, height, width):
  x1, y1, x2, y2 = box
  xs, ys = np.arange(width) + 0.5, np.arange(height) + 0.5
  return (((ys >= y1) & (ys <= y2))[:, None]
          & ((xs >= x1) & (xs <= x2))[None, :])


def reference_paste(values, box, height, width):
  """Per-pixel bilinear read of a [m_h, m_w] grid, clamped at its edges."""
  m_h, m_w = values.shape
  x1, y1, x2, y2 = (float(v) for v in box)
  out = np.zeros((height, width))
  if x2 <= x1 or y2 <= y1:
    return out
  for y in range(height):
    for x in range(width):
      if not (x1 <= x + 0.5 <= x2 and y1 <= y + 0.5 <= y2):
        continue
      u = min(max((x + 0.5 - x1) / (x2 - x1) * m_w - 0.5, 0.0), m_w - 1.0)
      v = min(max((y + 0.5 - y1) / (y2 - y1) * m_h - 0.5, 0.0), m_h - 1.0)
      u0, v0 = int(np.floor(u)), int(np.floor(v))
      u1, v1 = min(u0 + 1, m_w - 1), min(v0 + 1, m_h - 1)
      fu, fv = u - u0, v - v0
      out[y, x] = ((1 - fv) * ((1 - fu) * values[v0, u0] + fu * values[v0, u1])
                   + fv * ((1 - fu) * values[v1, u0] + fu * values[v1, u1]))
  return out


PASTE_BOXES = np.array([[[2.3, 1.7, 9.6, 7.2], [-3.0, 5.0, 4.0, 14.0],
                         [0.0, 0.0, 12.0, 10.0]]], np.float32)


def test_paste_constant_is_exactly_the_box():
  pasted = paste_rois(jnp.ones((1, 3, 5, 4, 1)), PASTE_BOXES, (10, 12))
  assert pasted.shape == (1, 3, 10, 12, 1) and pasted.dtype == jnp.float32
  for k, box in enumerate(PASTE_BOXES[0]):
    np.testing.assert_array_equal(pasted[0, k, ..., 0],
                                  inside_mask(box, 10, 12).astype(np.float32))


def test_paste_matches_loop_reference():
  values = np.random.default_rng(6).normal(size=(1, 3, 5, 4, 2))
  pasted = paste_rois(
      jnp.asarray(values, jnp.float32), jnp.asarray(PASTE_BOXES), (10, 12))
  for k, box in enumerate(PASTE_BOXES[0]):
    for c in range(2):
      np.testing.assert_allclose(
          pasted[0, k, ..., c], reference_paste(values[0, k, ..., c], box,
                                                10, 12), atol=1e-5)


def test_crop_then_paste_reproduces_a_linear_map():
  # Bilinear sampling is exact on linear maps, so RoIAlign then pasting
  # gives the map back wherever neither step clamps: the box stays inside
  # the map and pixel centres lie at least half a cell inside the box.
  ys, xs = np.mgrid[:16, :16].astype(np.float32)
  features = jnp.asarray((0.7 * xs - 0.3 * ys + 2.0)[None, :, :, None])
  box = np.array([3.2, 2.7, 12.6, 11.3], np.float32)
  m = 7
  crops = roi_align(features, jnp.asarray(box[None, None]), m,
                       sampling_ratio=2)
  pasted = paste_rois(crops, box[None, None], (16, 16))[0, 0, ..., 0]
  half_w, half_h = (box[2] - box[0]) / m / 2, (box[3] - box[1]) / m / 2
  cx, cy = xs + 0.5, ys + 0.5
  check = ((cx >= box[0] + half_w) & (cx <= box[2] - half_w)
           & (cy >= box[1] + half_h) & (cy <= box[3] - half_h))
  assert check.sum() >= 36
  np.testing.assert_allclose(np.asarray(pasted)[check],
                             np.asarray(features)[0, ..., 0][check],
                             atol=1e-4)


def test_paste_degenerate_boxes_are_zero_and_finite():
  boxes = jnp.array([[[3.0, 2.0, 3.0, 8.0], [1.0, 6.0, 7.0, 4.0]]])
  values = jnp.ones((1, 2, 3, 3, 1))
  pasted = paste_rois(values, boxes, (10, 12))
  np.testing.assert_array_equal(pasted, 0.0)
  grads = jax.jit(jax.grad(
      lambda v, b: jnp.sum(ra.paste_rois(v, b, (10, 12))), argnums=(0, 1)))(
          values, boxes)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_crop_labels_by_hand():
  labels = jnp.arange(16, dtype=jnp.int32).reshape(1, 4, 4)
  got = crop_labels(labels, jnp.array([[[0.0, 0.0, 4.0, 4.0]]]), 2)
  # Cell centres at 1 and 3 read pixels (1, 1), (1, 3), (3, 1), (3, 3).
  np.testing.assert_array_equal(got[0, 0], [[5, 7], [13, 15]])
  assert got.dtype == jnp.int32
  # Box x in [-2, 2]: the left centres (x = -1) fall off the image.
  got = crop_labels(labels, jnp.array([[[-2.0, 0.0, 2.0, 4.0]]]), 2,
                       fill=-1)
  np.testing.assert_array_equal(got[0, 0], [[-1, 5], [-1, 13]])


def reference_crop_labels(labels, box, out_h, out_w, fill):
  height, width = labels.shape
  x1, y1, x2, y2 = (float(v) for v in box)
  out = np.full((out_h, out_w), fill, labels.dtype)
  for i in range(out_h):
    for j in range(out_w):
      y = int(np.floor(y1 + (i + 0.5) * (y2 - y1) / out_h))
      x = int(np.floor(x1 + (j + 0.5) * (x2 - x1) / out_w))
      if 0 <= y < height and 0 <= x < width:
        out[i, j] = labels[y, x]
  return out


def test_crop_labels_matches_loop_reference():
  rng = np.random.default_rng(7)
  labels = rng.integers(0, 1000, size=(2, H, W)).astype(np.int32)
  boxes = make_boxes(1.0, seed=8)
  got = crop_labels(labels, jnp.asarray(boxes), (5, 6), 255)
  assert got.shape == (2, 5, 5, 6)
  for b in range(2):
    for k in range(5):
      np.testing.assert_array_equal(
          got[b, k], reference_crop_labels(labels[b], boxes[b, k], 5, 6, 255))
