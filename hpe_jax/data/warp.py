"""One affine warp applied identically to image, keypoints, masks and parts.

The model input is warped at input resolution; keypoints, masks and part maps
go straight to the output (heatmap) resolution through the same matrix
composed with the centre-aligned stride (`hpe_jax.ops.affine`). A mirrored
crop also permutes left/right joints and part labels, so that "left" keeps
meaning the person's left.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from hpe_jax.data import augment
from hpe_jax.data import skeletons
from hpe_jax.ops import affine


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Where a crop lands: input size (h, w) and the output stride."""
  input_size: tuple[int, int]
  stride: int

  @property
  def output_size(self) -> tuple[int, int]:
    h, w = self.input_size
    if h % self.stride or w % self.stride:
      raise ValueError(f'input size {self.input_size} is not a multiple of '
                       f'the output stride {self.stride}')
    return h // self.stride, w // self.stride

  @property
  def aspect_ratio(self) -> float:
    return self.input_size[1] / self.input_size[0]


@dataclasses.dataclass(frozen=True)
class Warp:
  """The matrices of one crop."""
  to_input: np.ndarray  # 2x3, image -> model input pixels
  to_output: np.ndarray  # 2x3, image -> output (heatmap) pixels
  flip: bool


def make_warp(crop: augment.Crop, geometry: Geometry) -> Warp:
  h, w = geometry.input_size
  to_input = affine.crop_affine(crop.center, crop.size, (w, h),
                                crop.rotation, crop.flip)
  to_output = affine.compose(affine.stride_affine(geometry.stride), to_input)
  return Warp(to_input, to_output, crop.flip)


def warp_image(image: np.ndarray, warp: Warp, geometry: Geometry):
  h, w = geometry.input_size
  return cv2.warpAffine(image, warp.to_input, (w, h), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_labels(labels: np.ndarray, warp: Warp, geometry: Geometry):
  """Nearest-neighbour warp of a uint8 label map to the output grid."""
  h, w = geometry.output_size
  return cv2.warpAffine(labels, warp.to_output, (w, h),
                        flags=cv2.INTER_NEAREST,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_keypoints(keypoints: np.ndarray, warp: Warp,
                   skeleton: skeletons.Skeleton | None) -> np.ndarray:
  """[..., K, 3] image keypoints -> output coordinates, joints permuted."""
  xy = affine.apply(warp.to_output, keypoints[..., :2])
  out = np.concatenate([xy, keypoints[..., 2:3]], -1).astype(np.float32)
  out = np.where(keypoints[..., 2:3] > 0, out, 0)
  if warp.flip and skeleton is not None:
    out = out[..., skeleton.flip_permutation, :]
  return out


def warp_part_map(part_map: np.ndarray, warp: Warp, geometry: Geometry,
                  schema: skeletons.PartSchema) -> np.ndarray:
  parts = warp_labels(part_map, warp, geometry)
  return schema.flip_lut[parts] if warp.flip else parts


def labels_to_image(labels: np.ndarray, affine: np.ndarray,
                    shape) -> np.ndarray:
  """Labels on a model's output grid, mapped back into the image.

  `affine` maps image pixels to the grid (a batch's ``affine``), so each
  image pixel reads the nearest label at its grid position (0 outside the
  grid). `shape` is the image's (height, width, ...).
  """
  return cv2.warpAffine(labels.astype(np.uint8), affine.astype(np.float64),
                        (shape[1], shape[0]),
                        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
