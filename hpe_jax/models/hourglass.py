"""Stacked hourglass network (Newell, Yang and Deng, ECCV 2016).

A stem brings the image to stride 4; each stack is an hourglass (repeated
pooling down to stride 4 * 2**depth, then nearest upsampling back, with a
skip branch at every resolution) followed by a heatmap head. Every stack's
heatmaps are returned for intermediate supervision, and every stack but the
last feeds its features and heatmaps back into the trunk through 1x1 convs.

The layout follows the paper's Torch code (pre-activation bottleneck
residuals everywhere, 7x7 stride-2 stem conv, 2x2 max-pool, nearest
upsampling). Deliberate differences: convs that feed a BatchNorm carry no
bias (the normalisation cancels it; 31k of the paper recipe's 25.4M
parameters), the stem's stride-2 conv pads 'SAME' (2 pixels before, 3 after,
where Torch pads 3 and 3: a half-pixel shift the learned filters absorb), the
heatmap convs start near zero (`layers.heatmap_conv`), and `separable=True`
offers a MobileNet-style light variant.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from hpe_jax.models import layers

Array = Any


def _residuals(x: Array, train: bool, *, count: int, features: int,
               separable: bool, dtype: Any) -> Array:
  """`count` residual modules in sequence, created in the calling module."""
  for _ in range(count):
    x = layers.Residual(features, separable, dtype)(x, train)
  return x


class Hourglass(nn.Module):
  """One hourglass of `depth` recursive levels at a constant channel count.

  Attributes:
    depth: number of 2x poolings from input to the bottleneck.
    features: channels throughout.
    num_blocks: residual modules per branch segment.
    separable: use separable residual modules.
    dtype: computation dtype.
  """
  depth: int
  features: int
  num_blocks: int = 1
  separable: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    residuals = functools.partial(_residuals, count=self.num_blocks,
                                  features=self.features,
                                  separable=self.separable, dtype=self.dtype)
    upper = residuals(x, train)
    lower = residuals(layers.max_pool2(x), train)
    if self.depth > 1:
      lower = Hourglass(self.depth - 1, self.features, self.num_blocks,
                        self.separable, self.dtype, name='inner')(lower, train)
    else:
      lower = residuals(lower, train)
    lower = residuals(lower, train)
    return upper + layers.upsample2(lower)


class Stem(nn.Module):
  """Image to stride-4 features: 7x7/2 conv, residual, pool, 2 residuals."""
  features: int
  separable: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: Array, train: bool) -> Array:
    residual = functools.partial(layers.Residual, separable=self.separable,
                                 dtype=self.dtype)
    x = layers.ConvBNReLU(64, 7, strides=2, dtype=self.dtype)(images, train)
    x = residual(128)(x, train)
    x = layers.max_pool2(x)
    x = residual(128)(x, train)
    return residual(self.features)(x, train)


class StackedHourglass(nn.Module):
  """Stacked hourglass pose network with intermediate supervision.

  Attributes:
    num_joints: heatmap channels K.
    num_stacks: hourglasses in sequence; each one's heatmaps are an output.
    features: trunk channels.
    depth: poolings inside each hourglass; input sides must be multiples of
      4 * 2**depth.
    num_blocks: residual modules per hourglass segment and per head.
    separable: depthwise-separable 3x3 convs in every residual module.
    dtype: computation dtype (parameters are float32 regardless).
  """
  num_joints: int
  num_stacks: int = 8
  features: int = 256
  depth: int = 4
  num_blocks: int = 1
  separable: bool = False
  dtype: Any = jnp.float32

  output_stride: ClassVar[int] = 4

  @nn.compact
  def __call__(self, images: Array, train: bool) -> dict[str, Array]:
    """Heatmaps of every stack.

    Args:
      images: [B, H, W, 3] normalised images, H and W divisible by
        4 * 2**depth.
      train: batch statistics (and their update) rather than running ones.

    Returns:
      {'heatmaps': float32 [num_stacks, B, H / 4, W / 4, num_joints]}; the
      last stack's are the prediction.
    """
    if min(self.num_stacks, self.depth, self.num_blocks) < 1:
      raise ValueError('num_stacks, depth and num_blocks must be >= 1')
    layers.check_divisible(images, self.output_stride * 2 ** self.depth,
                           'StackedHourglass',
                           f'stride {self.output_stride}, depth {self.depth}')
    x = Stem(self.features, self.separable, self.dtype, name='stem')(
        jnp.asarray(images, self.dtype), train)
    heatmaps = []
    for stack in range(self.num_stacks):
      y = Hourglass(self.depth, self.features, self.num_blocks,
                    self.separable, self.dtype,
                    name=f'hourglass_{stack}')(x, train)
      y, h = _Head(self.features, self.num_joints, self.num_blocks,
                   self.separable, self.dtype, name=f'head_{stack}')(y, train)
      heatmaps.append(h)
      if stack < self.num_stacks - 1:
        # The next stack sees this stack's features and predictions, so it
        # can refine them rather than start over.
        x = (x + layers.conv(self.features, 1, self.dtype,
                             name=f'merge_features_{stack}')(y)
             + layers.conv(self.features, 1, self.dtype,
                           name=f'merge_heatmaps_{stack}')(h))
    return layers.stacked_heatmaps(heatmaps)


class _Head(nn.Module):
  """Post-hourglass residuals, 1x1 conv-BN-ReLU, 1x1 conv to heatmaps.

  Returns (features, heatmaps): the features feed the next stack.
  """
  features: int
  num_joints: int
  num_blocks: int
  separable: bool
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, train: bool) -> tuple[Array, Array]:
    x = _residuals(x, train, count=self.num_blocks, features=self.features,
                   separable=self.separable, dtype=self.dtype)
    x = layers.ConvBNReLU(self.features, 1, dtype=self.dtype)(x, train)
    return x, layers.heatmap_conv(self.num_joints, self.dtype,
                                  name='heatmaps')(x)
