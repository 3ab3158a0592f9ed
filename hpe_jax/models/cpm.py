"""Convolutional Pose Machines (Wei, Ramakrishna, Kanade and Sheikh, CVPR 2016).

A sequence of stages, each predicting joint belief maps at stride 8. Stage 1
sees only the image; every later stage sees image features, the previous
stage's beliefs and a centre map, and its large kernels let it reason about
the spatial context between joints. Every stage's beliefs are returned for
intermediate supervision.

Layout as in the paper's Fig. 2 (368x368 input, `features`=128):

  stage 1: [9x9 conv(128), 2x2 pool] x 3, 5x5 conv(32), 9x9 conv(512),
           1x1 conv(512), 1x1 conv(K)
  image features, computed once for all stages t >= 2:
           [9x9 conv(128), 2x2 pool] x 3, 5x5 conv(32)
  stage t >= 2: concat(image features, beliefs t-1, centre map),
           3 x stage_kernel conv(128), 1x1 conv(128), 1x1 conv(K)

with widths 32, 128 and 512 scaled as `features` / 4, `features` and
4 * `features`, so small configs are cheap. Differences from the paper:
BatchNorm + ReLU follow every conv but the belief outputs (as modern CPM
re-implementations do; the original had ReLU only and trained with a small
learning rate), pools are 2x2 rather than 3x3 with stride 2 (an exact
stride-8 grid, centred on the input pixels), and the beliefs have K joint
channels only, without the paper's extra background channel.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hpe_jax.models import layers

Array = Any

_STRIDE = 8


def center_map(size: tuple[int, int], sigma: float,
               stride: int = _STRIDE) -> np.ndarray:
  """A Gaussian at the crop centre, area-averaged to the output grid.

  Args:
    size: input (height, width), divisible by `stride`.
    sigma: standard deviation in input pixels.
    stride: output stride.

  Returns:
    float32 [height / stride, width / stride], peak near 1.
  """
  height, width = size
  # Pixel-index coordinates: the centre of an even-sized crop lies between
  # pixels, which keeps the map symmetric.
  ys = np.arange(height, dtype=np.float64)[:, None] - (height - 1) / 2
  xs = np.arange(width, dtype=np.float64)[None, :] - (width - 1) / 2
  full = np.exp(-(xs ** 2 + ys ** 2) / (2 * sigma ** 2))
  pooled = full.reshape(height // stride, stride, width // stride, stride)
  return pooled.mean(axis=(1, 3)).astype(np.float32)


class _ImageFeatures(nn.Module):
  """Image to stride-8 features: three 9x9 conv + pool, then a 5x5 conv."""
  features: int
  out_features: int
  dtype: Any

  @nn.compact
  def __call__(self, images: Array, train: bool) -> Array:
    x = images
    for _ in range(3):
      x = layers.ConvBNReLU(self.features, 9, dtype=self.dtype)(x, train)
      x = layers.max_pool2(x)
    return layers.ConvBNReLU(self.out_features, 5, dtype=self.dtype)(x, train)


class _BeliefHead(nn.Module):
  """`num_convs` large-kernel convs, a 1x1 conv, then 1x1 to belief maps."""
  kernel_size: int
  width: int
  num_convs: int
  num_joints: int
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    for _ in range(self.num_convs):
      x = layers.ConvBNReLU(self.width, self.kernel_size,
                            dtype=self.dtype)(x, train)
    x = layers.ConvBNReLU(self.width, 1, dtype=self.dtype)(x, train)
    return layers.heatmap_conv(self.num_joints, self.dtype, name='beliefs')(x)


class ConvolutionalPoseMachine(nn.Module):
  """Convolutional pose machine with intermediate supervision.

  Attributes:
    num_joints: belief map channels K (no background channel).
    num_stages: stages in sequence; each one's beliefs are an output.
    features: base width (128 in the paper); see the module docstring.
    stage_kernel: kernel size of the large convs in stages t >= 2.
    dtype: computation dtype (parameters are float32 regardless).
    center_sigma: standard deviation of the centre map, in input pixels.
  """
  num_joints: int
  num_stages: int = 6
  features: int = 128
  stage_kernel: int = 11
  dtype: Any = jnp.float32
  center_sigma: float = 21.0

  output_stride: ClassVar[int] = _STRIDE

  @nn.compact
  def __call__(self, images: Array, train: bool) -> dict[str, Array]:
    """Belief maps of every stage.

    Args:
      images: [B, H, W, 3] normalised person crops centred on the person, H
        and W divisible by 8.
      train: batch statistics (and their update) rather than running ones.

    Returns:
      {'heatmaps': float32 [num_stages, B, H / 8, W / 8, num_joints]}; the
      last stage's are the prediction.
    """
    if self.num_stages < 1 or self.features < 4 or self.stage_kernel < 1:
      raise ValueError('num_stages and stage_kernel must be >= 1, '
                       f'features >= 4; got {self.num_stages}, '
                       f'{self.stage_kernel}, {self.features}')
    layers.check_divisible(images, _STRIDE, 'ConvolutionalPoseMachine',
                           f'stride {_STRIDE}')
    x = jnp.asarray(images, self.dtype)
    narrow, wide = self.features // 4, 4 * self.features
    stage_1 = _ImageFeatures(self.features, narrow, self.dtype,
                             name='stage_1_features')(x, train)
    beliefs = [_BeliefHead(9, wide, 1, self.num_joints, self.dtype,
                           name='stage_1')(stage_1, train)]
    if self.num_stages > 1:
      features = _ImageFeatures(self.features, narrow, self.dtype,
                                name='image_features')(x, train)
      centre = jnp.broadcast_to(
          jnp.asarray(center_map(images.shape[1:3], self.center_sigma),
                      self.dtype)[None, :, :, None],
          features.shape[:3] + (1,))
      for stage in range(2, self.num_stages + 1):
        inputs = jnp.concatenate([features, beliefs[-1], centre], axis=-1)
        beliefs.append(
            _BeliefHead(self.stage_kernel, self.features, 3, self.num_joints,
                        self.dtype, name=f'stage_{stage}')(inputs, train))
    return layers.stacked_heatmaps(beliefs)
