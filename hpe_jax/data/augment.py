"""Augmentation: random crop geometry and photometric changes.

Geometry is only *sampled* here, as a `Crop` (centre, size, rotation, flip);
`hpe_jax.data.warp` turns it into one affine matrix applied identically to the
image, keypoints, masks and part maps. Each augmentation has its own config
fields and is off when its probability or magnitude is 0:

=====================  =====================================================
field                  meaning
=====================  =====================================================
flip                   probability of a horizontal flip (joints and parts
                       swap left/right)
scale                  (min, max) factor on the crop size
shift, shift_prob      centre shift, as a fraction of the crop size
rotation,              rotation angle drawn from [-rotation, rotation]
rotation_prob          degrees
half_body_prob,        crop to the upper or lower body when the person has at
half_body_min_joints   least this many labelled joints
brightness, contrast,  relative changes drawn from [-x, x], each applied
saturation,            with probability color_prob
color_prob
noise_std, noise_prob  Gaussian pixel noise (fraction of 255)
blur_sigma, blur_prob  Gaussian blur, sigma drawn from [0.1, blur_sigma]
=====================  =====================================================
"""

from __future__ import annotations

import dataclasses

import cv2
import ml_collections
import numpy as np

from hpe_jax.data import skeletons
from hpe_jax.ops import affine


@dataclasses.dataclass(frozen=True)
class Crop:
  """A rotated, possibly mirrored box of the source image."""
  center: np.ndarray  # (x, y)
  size: np.ndarray  # (w, h)
  rotation: float = 0.0  # degrees, counter-clockwise in the output
  flip: bool = False


def default_config() -> ml_collections.ConfigDict:
  """Augmentation defaults for training (mmpose's top-down recipe)."""
  return ml_collections.ConfigDict(dict(
      flip=0.5,
      scale=(0.75, 1.25),
      shift=0.16, shift_prob=0.3,
      rotation=40.0, rotation_prob=0.6,
      half_body_prob=0.3, half_body_min_joints=8,
      brightness=0.2, contrast=0.2, saturation=0.2, color_prob=0.5,
      noise_std=0.02, noise_prob=0.2,
      blur_sigma=1.5, blur_prob=0.1,
  ))


def _half_body_box(rng, keypoints, skeleton, min_joints):
  """Box around the labelled upper- or lower-body joints, or None."""
  labelled = keypoints[:, 2] > 0
  if labelled.sum() < min_joints:
    return None
  lower = skeleton.lower_body
  upper_ok = labelled & ~lower
  lower_ok = labelled & lower
  # Prefer a random half, but only one with enough joints to span a body.
  halves = [h for h, n in ((upper_ok, 3), (lower_ok, 3)) if h.sum() >= n]
  if not halves:
    return None
  chosen = halves[rng.integers(len(halves))]
  pts = keypoints[chosen, :2]
  return np.concatenate([pts.min(0), pts.max(0)])


def sample_crop(rng: np.random.Generator, box, keypoints,
                skeleton: skeletons.Skeleton | None, aspect_ratio: float,
                padding: float, cfg: ml_collections.ConfigDict | None) -> Crop:
  """Draws the crop of one person (or of the whole image) for training.

  Args:
    rng: per-example generator.
    box: x1, y1, x2, y2 of what to crop.
    keypoints: [K, 3] of the person (for half-body), or None.
    skeleton: the keypoints' skeleton (for half-body), or None.
    aspect_ratio: w / h of the model input.
    padding: factor on the box size (after fixing the aspect ratio).
    cfg: `default_config()`-like; None means no augmentation.

  Returns:
    The crop.
  """
  if cfg is None:
    center, size = affine.box_to_center_size(box, aspect_ratio, padding)
    return Crop(center, size)
  if (keypoints is not None and skeleton is not None and
      cfg.half_body_prob > 0 and rng.random() < cfg.half_body_prob):
    half = _half_body_box(rng, keypoints, skeleton, cfg.half_body_min_joints)
    if half is not None:
      # Half a body needs more context around its joints than a full box.
      box = half
      padding *= 1.5
  center, size = affine.box_to_center_size(box, aspect_ratio, padding)
  lo, hi = cfg.scale
  size = size * rng.uniform(lo, hi)
  if cfg.shift > 0 and rng.random() < cfg.shift_prob:
    center = center + rng.uniform(-cfg.shift, cfg.shift, 2) * size
  rotation = 0.0
  if cfg.rotation > 0 and rng.random() < cfg.rotation_prob:
    rotation = float(rng.uniform(-cfg.rotation, cfg.rotation))
  flip = bool(cfg.flip > 0 and rng.random() < cfg.flip)
  return Crop(center, size, rotation, flip)


def photometric(rng: np.random.Generator, image: np.ndarray,
                cfg: ml_collections.ConfigDict | None) -> np.ndarray:
  """Brightness, contrast, saturation, noise and blur on a uint8 RGB image."""
  if cfg is None:
    return image
  img = image.astype(np.float32)
  if cfg.brightness > 0 and rng.random() < cfg.color_prob:
    img *= 1 + rng.uniform(-cfg.brightness, cfg.brightness)
  if cfg.contrast > 0 and rng.random() < cfg.color_prob:
    mean = img.mean()
    img = (img - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
  if cfg.saturation > 0 and rng.random() < cfg.color_prob:
    gray = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = gray[..., None] + (img - gray[..., None]) * (
        1 + rng.uniform(-cfg.saturation, cfg.saturation))
  if cfg.noise_std > 0 and rng.random() < cfg.noise_prob:
    img += rng.normal(0, cfg.noise_std * 255, img.shape).astype(np.float32)
  if cfg.blur_sigma > 0 and rng.random() < cfg.blur_prob:
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.1, cfg.blur_sigma))
  return np.clip(img + 0.5, 0, 255).astype(np.uint8)
