"""U-Net (Ronneberger et al., MICCAI 2015) for person and body-part masks.

Each of the `levels` encoder levels applies two 3x3 conv-BN-ReLU blocks and
halves the resolution with a 2x2 max-pool; channels double from `features`
(64) to `features * 2**levels` (1024) at the bottom. Each decoder level
doubles the resolution (nearest upsampling followed by a 3x3 conv, or a
transposed conv with ``upsample='transpose'``), concatenates the encoder's
features of that resolution and applies two conv-BN-ReLU blocks. Dropout
(0.3 by default) acts between levels, on the features each level passes on.

The output has the input's resolution (``output_stride = 1``) and goes
through the shared `segmentation_heads.SegmentationHeads`: mask logits and,
for the multi-task variants, joint heatmaps and/or joint softmax logits.

Differences from the paper: 'SAME' padding (outputs align with inputs, no
cropping of skips) and BatchNorm after every conv, as most re-implementations
do; both keep the recipe trainable at small batch sizes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from hpe_jax.models import layers
from hpe_jax.models import segmentation_heads

Array = Any
UPSAMPLE = ('resize', 'transpose')


class _DoubleConv(nn.Module):
  features: int
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = layers.ConvBNReLU(self.features, 3, dtype=self.dtype)(x, train)
    return layers.ConvBNReLU(self.features, 3, dtype=self.dtype)(x, train)


class UNet(nn.Module):
  """U-Net with segmentation (and optional joint) heads.

  Attributes:
    num_joints: joints of the joint heads (unused with joint_head='none').
    num_classes: mask classes: 2 (background / person) or 1 + body parts.
    features: channels of the first level; doubled at every level down.
    levels: number of 2x poolings (input sides must divide 2**levels).
    dropout_rate: dropout on the features passed between levels.
    upsample: 'resize' (nearest x2 then 3x3 conv) or 'transpose' (2x2
      transposed conv, stride 2).
    joint_head: 'none', 'regression', 'softmax' or 'both'
      (see `segmentation_heads`).
    dtype: computation dtype (parameters stay float32).
  """
  num_joints: int
  num_classes: int = 2
  features: int = 64
  levels: int = 4
  dropout_rate: float = 0.3
  upsample: str = 'resize'
  joint_head: str = 'none'
  dtype: Any = jnp.float32

  output_stride: ClassVar[int] = 1

  @nn.compact
  def __call__(self, images: Array, train: bool) -> dict[str, Array]:
    layers.check_divisible(images, 2 ** self.levels, 'UNet',
                           f'{self.levels} poolings')
    if self.upsample not in UPSAMPLE:
      raise ValueError(f'upsample must be one of {UPSAMPLE}, got '
                       f'{self.upsample!r}')
    segmentation_heads.check_joint_head(self.joint_head)
    dropout = nn.Dropout(self.dropout_rate, deterministic=not train)
    x = images.astype(self.dtype)
    skips = []
    for level in range(self.levels):
      x = _DoubleConv(self.features * 2 ** level, self.dtype)(x, train)
      skips.append(x)
      x = dropout(layers.max_pool2(x))
    x = _DoubleConv(self.features * 2 ** self.levels, self.dtype)(x, train)
    for level in reversed(range(self.levels)):
      features = self.features * 2 ** level
      x = dropout(x)
      if self.upsample == 'transpose':
        x = nn.ConvTranspose(features, (2, 2), strides=(2, 2),
                             dtype=self.dtype, param_dtype=jnp.float32)(x)
      else:
        x = layers.conv(features, 3, self.dtype)(layers.upsample2(x))
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = _DoubleConv(features, self.dtype)(x, train)
    return segmentation_heads.SegmentationHeads(
        self.num_classes, self.num_joints, self.joint_head,
        self.dtype)(x)
