"""Harmonic U-Net: a U-Net of rotation-equivariant harmonic convolutions.

The topology is `unet.UNet`'s: at each of the `levels` encoder levels two
harmonic convs (each followed by BatchNorm-ReLU on the magnitudes), a 2x2
magnitude max-pool; a bottom block; at each decoder level nearest
upsampling, a harmonic conv, concatenation of the encoder's features of that
resolution (per order, along channels) and two harmonic convs; dropout on
the features passed between levels. The layers are in `harmonic`.

Each level's channel budget is the plain U-Net's (`features` doubling per
level), split evenly over the rotation orders: with the defaults, 32 complex
channels of order 0 and 32 of order 1 at level 1. Per pair of complex
channel indices a 3x3 harmonic conv over orders (0, 1) has 14 weights (3 or
2 rings plus a phase for each of the 4 order pairs) where the plain conv
has 36, so the network has about 2.6 times fewer parameters than the U-Net
of the same `features`. Each complex channel is two real ones, though: the
real convolutions are those of a plain U-Net with twice the channels, at
about 4 times its FLOPs.

The heads (`segmentation_heads.SegmentationHeads`) read the magnitudes of
all orders, which are rotation invariant: rotating the image by a multiple
of 90 degrees rotates every output map the same way, up to float rounding.
Other angles are equivariant only approximately (the pixel grid is not).

Two choices beyond the paper's layers: the image gets a constant extra input
channel (see `HarmonicUNet.__call__`), and filters are 3x3 by default, as in
the plain U-Net. On a smooth image turned by 45 degrees, random 3x3
harmonic filters keep order-0 magnitudes within about 4% (order 1: 8%);
5x5 ones do no better (4% and 12%: their outer rings, radii 2, sqrt 5 and
sqrt 8, sample angles unevenly) at 2.8 times the cost.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from hpe_jax.models import harmonic
from hpe_jax.models import layers
from hpe_jax.models import segmentation_heads

Array = Any


class _DoubleConv(nn.Module):
  features: int
  in_orders: harmonic.Orders
  orders: harmonic.Orders
  kernel_size: int
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = harmonic.HarmonicConvBNReLU(self.features, self.in_orders,
                                    self.orders, self.kernel_size,
                                    self.dtype)(x, train)
    return harmonic.HarmonicConvBNReLU(self.features, self.orders,
                                       self.orders, self.kernel_size,
                                       self.dtype)(x, train)


class HarmonicUNet(nn.Module):
  """Rotation-equivariant U-Net with segmentation (and joint) heads.

  Attributes:
    num_joints: joints of the joint heads (unused with joint_head='none').
    num_classes: mask classes: 2 (background / person) or 1 + body parts.
    features: real channel budget of the first level, split evenly over
      `orders` into complex channels; doubled at every level down.
    levels: number of 2x poolings (input sides must divide 2**levels).
    orders: rotation orders of the hidden features.
    kernel_size: odd side of the harmonic filters.
    dropout_rate: dropout of whole complex values passed between levels.
    joint_head: 'none', 'regression', 'softmax' or 'both'
      (see `segmentation_heads`).
    dtype: computation dtype (parameters stay float32).
  """
  num_joints: int
  num_classes: int = 2
  features: int = 64
  levels: int = 4
  orders: tuple[int, ...] = (0, 1)
  kernel_size: int = 3
  dropout_rate: float = 0.3
  joint_head: str = 'none'
  dtype: Any = jnp.float32

  output_stride: ClassVar[int] = 1

  @nn.compact
  def __call__(self, images: Array, train: bool) -> dict[str, Array]:
    """Per-pixel outputs at the input's resolution.

    Args:
      images: [B, H, W, 3] normalised images, H and W divisible by
        2**levels.
      train: batch statistics (and their update) and dropout.

    Returns:
      `SegmentationHeads`' dict: float32 'mask_logits' [B, H, W,
      num_classes], plus the joint outputs that `joint_head` asks for.
    """
    layers.check_divisible(images, 2 ** self.levels, 'HarmonicUNet',
                           f'{self.levels} poolings')
    segmentation_heads.check_joint_head(self.joint_head)
    orders = tuple(self.orders)
    if not orders or len(set(orders)) != len(orders):
      raise ValueError(f'orders must be distinct and non-empty, got {orders}')
    if self.features % len(orders):
      raise ValueError(f'features ({self.features}) must divide evenly over '
                       f'{len(orders)} orders')
    channels = self.features // len(orders)
    dropout = harmonic.dropout(self.dropout_rate, train)

    images = images.astype(self.dtype)
    # Every harmonic layer is odd (f(-z) = -f(z)), so without a constant
    # input the magnitudes, hence the outputs, could not tell an image from
    # its negative. A constant channel acts as an order-0 bias of the first
    # conv, which keeps rotation equivariance (zero padding included).
    x = harmonic.from_real(jnp.concatenate(
        [images, jnp.ones_like(images[..., :1])], axis=-1))
    in_orders = harmonic.REAL_ORDERS
    skips = []
    for level in range(self.levels):
      x = _DoubleConv(channels * 2 ** level, in_orders, orders,
                      self.kernel_size, self.dtype)(x, train)
      in_orders = orders
      skips.append(x)
      x = dropout(harmonic.max_pool2(x))
    x = _DoubleConv(channels * 2 ** self.levels, in_orders, orders,
                    self.kernel_size, self.dtype)(x, train)
    for level in reversed(range(self.levels)):
      level_channels = channels * 2 ** level
      x = dropout(x)
      x = harmonic.HarmonicConv(level_channels, orders, orders,
                                self.kernel_size, self.dtype)(
                                    harmonic.upsample2(x))
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = _DoubleConv(level_channels, orders, orders, self.kernel_size,
                      self.dtype)(x, train)
    return segmentation_heads.SegmentationHeads(
        self.num_classes, self.num_joints, self.joint_head,
        self.dtype)(harmonic.magnitudes(x))
