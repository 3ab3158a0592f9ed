"""Pyramidal Lucas–Kanade in JAX against known shifts and against OpenCV's
calcOpticalFlowPyrLK on the same images and points."""

import cv2
import numpy as np
import pytest

from hpe_jax.video import lucas_kanade


def textured(size=(160, 200), seed=0) -> np.ndarray:
  """Smooth random texture, 0-255 grey."""
  noise = np.random.default_rng(seed).uniform(0, 255, size).astype(np.float32)
  return cv2.GaussianBlur(noise, (0, 0), 3.0) * 4 - 384


def shifted(image, dx, dy):
  m = np.float32([[1, 0, dx], [0, 1, dy]])
  return cv2.warpAffine(image, m, image.shape[::-1], flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize('dx,dy', [(0.4, -0.3), (2.5, 1.75), (6.3, -4.6)])
def test_finds_known_shifts_as_opencv_does(dx, dy):
  previous = np.clip(textured(), 0, 255).astype(np.uint8)
  current = np.clip(shifted(previous.astype(np.float32), dx, dy), 0,
                    255).astype(np.uint8)
  ys, xs = np.mgrid[40:121:20, 40:161:20]
  points = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)
  ours, status = lucas_kanade.track(previous, current, points, window=21,
                                    levels=3)
  ours = np.asarray(ours)
  theirs, found, _ = cv2.calcOpticalFlowPyrLK(
      previous, current, points[:, None], None, winSize=(21, 21), maxLevel=2,
      criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01))
  theirs = theirs[:, 0]
  assert np.asarray(status).all() and found.all()
  truth = points + [dx, dy]
  ours_error = np.linalg.norm(ours - truth, axis=-1)
  theirs_error = np.linalg.norm(theirs - truth, axis=-1)
  assert ours_error.max() < 0.15, ours_error
  assert ours_error.mean() < theirs_error.mean() + 0.05
  np.testing.assert_allclose(ours, theirs, atol=0.2)


def test_flat_windows_and_points_leaving_are_refused():
  image = np.clip(textured(), 0, 255).astype(np.uint8)
  image[:, :60] = 128  # no texture on the left
  current = np.clip(shifted(image.astype(np.float32), 3, 0), 0,
                    255).astype(np.uint8)
  points = np.float32([[30, 80], [120, 80], [198, 80]])
  _, status = lucas_kanade.track(image, current, points)
  assert np.asarray(status).tolist() == [False, True, False]
