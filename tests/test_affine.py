"""Affine geometry: box-to-grid mapping, rotation, flip, stride, cv2 warps."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.ops import affine


def test_box_edges_map_to_grid_edges():
  m = affine.crop_affine(center=(50, 40), size=(20, 40), output_size=(8, 16))
  pts = np.array([[50, 40], [40, 20], [60, 60]], np.float64)
  out = affine.apply(m, pts)
  # Centre -> (w-1)/2, (h-1)/2; box corners -> the outer pixel edges.
  np.testing.assert_allclose(out, [[3.5, 7.5], [-0.5, -0.5], [7.5, 15.5]])


def test_box_to_center_size_fixes_aspect_then_pads():
  center, size = affine.box_to_center_size((10, 20, 30, 100), 0.75, 1.25)
  np.testing.assert_allclose(center, [20, 60])
  # 20x80 is too narrow for w/h = 0.75: width grows to 60, then x1.25.
  np.testing.assert_allclose(size, [75, 100])


def test_positive_rotation_turns_content_counter_clockwise():
  m = affine.crop_affine((0, 0), (20, 20), (21, 21), rotation_deg=90)
  # A point above the centre ends up left of the output centre.
  out = affine.apply(m, np.array([[0.0, -5.0]]))
  centre = 10.0
  np.testing.assert_allclose(out, [[centre - 5 * 21 / 20, centre]],
                             atol=1e-9)


def test_flip_mirrors_about_the_output_centre():
  plain = affine.crop_affine((30, 30), (40, 40), (64, 64), 17.0)
  flipped = affine.crop_affine((30, 30), (40, 40), (64, 64), 17.0, flip=True)
  pts = np.random.default_rng(0).uniform(0, 60, (10, 2))
  a, b = affine.apply(plain, pts), affine.apply(flipped, pts)
  np.testing.assert_allclose(a[:, 0] + b[:, 0], 63.0)
  np.testing.assert_allclose(a[:, 1], b[:, 1])


def test_stride_grid_is_centre_aligned():
  m = affine.stride_affine(4)
  # Heatmap pixel 0 covers input pixels 0..3, whose centre is 1.5.
  np.testing.assert_allclose(affine.apply(m, np.array([[1.5, 5.5]])),
                             [[0.0, 1.0]])


def test_compose_invert_round_trip_numpy_and_jax():
  rng = np.random.default_rng(1)
  a = affine.crop_affine((12, 30), (50, 70), (48, 64), 33.0, True)
  b = affine.stride_affine(4)
  ab = affine.compose(b, a)
  pts = rng.uniform(-20, 80, (5, 2))
  np.testing.assert_allclose(affine.apply(ab, pts),
                             affine.apply(b, affine.apply(a, pts)))
  back = affine.apply(affine.invert(ab), affine.apply(ab, pts))
  np.testing.assert_allclose(back, pts, atol=1e-9)
  batch = np.stack([ab, affine.invert(ab)])
  np.testing.assert_allclose(affine.invert(batch)[0], affine.invert(ab))
  out = affine.apply(jnp.asarray(ab, jnp.float32), jnp.asarray(pts))
  np.testing.assert_allclose(out, affine.apply(ab, pts), rtol=1e-5)


def test_invert_works_on_jax_arrays_under_jit():
  rng = np.random.default_rng(5)
  matrices = rng.normal(size=(3, 2, 3))
  inverse = jax.jit(affine.invert)(jnp.asarray(matrices, jnp.float32))
  assert isinstance(inverse, jax.Array)
  for m, inv in zip(matrices, np.asarray(inverse, np.float64)):
    np.testing.assert_allclose(affine.compose(inv, m),
                               [[1, 0, 0], [0, 1, 0]], atol=1e-4)


@pytest.mark.parametrize('rotation,flip', [(0, False), (30, False),
                                           (-70, True)])
def test_cv2_warp_moves_pixels_where_apply_moves_points(rotation, flip):
  # A smooth blob at x=61, y=37: a single-pixel dot would alias.
  ys, xs = np.mgrid[:120, :100]
  image = np.exp(-((xs - 61) ** 2 + (ys - 37) ** 2) / (2 * 4.0**2))
  image = image.astype(np.float32)
  m = affine.crop_affine((50, 60), (80, 100), (64, 80), rotation, flip)
  warped = cv2.warpAffine(image, m, (64, 80), flags=cv2.INTER_LINEAR)
  ys, xs = np.mgrid[:80, :64]
  centroid = np.array([(xs * warped).sum(), (ys * warped).sum()]) / (
      warped.sum())
  np.testing.assert_allclose(centroid, affine.apply(m, np.array([[61, 37]]))[0],
                             atol=0.02)
