"""Building blocks shared by the pose models: convs, BatchNorm, residuals.

Every block computes in the `dtype` it is given and keeps float32 parameters,
so a model switches to bfloat16 compute with one field. BatchNorm uses the
project-wide settings (momentum 0.9, epsilon 1e-5) and, under `jax.jit` over a
sharded batch, normalises with statistics of the whole global batch.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from hpe_jax.ops import pointwise_conv

Array = Any
Dtype = Any


def batch_norm(train: bool, dtype: Dtype, name: str | None = None,
               bias_init=nn.initializers.zeros):
  """BatchNorm with the project settings; running stats in `batch_stats`."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
                      bias_init=bias_init, name=name)


def conv(features: int, kernel_size: int, dtype: Dtype, *, strides: int = 1,
         use_bias: bool = True, groups: int = 1, name: str | None = None):
  """Square 'SAME' conv with float32 parameters computing in `dtype`.

  1x1 stride-1 convs differentiate into matrix products
  (`pointwise_conv`), much faster on CPU.
  """
  pointwise = kernel_size == 1 and strides == 1 and groups == 1
  return nn.Conv(features, (kernel_size, kernel_size),
                 strides=(strides, strides), padding='SAME',
                 feature_group_count=groups, use_bias=use_bias, dtype=dtype,
                 param_dtype=jnp.float32, name=name,
                 conv_general_dilated=pointwise_conv.conv if pointwise
                 else None)


def heatmap_conv(num_joints: int, dtype: Dtype, name: str):
  """1x1 conv from features to heatmaps, initialised near zero.

  Targets are almost all zero; heatmaps of order 1 at initialisation (the
  default initialiser) keep the loss far above the all-zero baseline for
  hundreds of steps. A std of 0.001 (as SimpleBaseline and HRNet use) starts
  training at that baseline, and a single batch is fitted ~40x better after
  200 steps.
  """
  return nn.Conv(num_joints, (1, 1), padding='SAME', dtype=dtype,
                 param_dtype=jnp.float32,
                 kernel_init=nn.initializers.normal(0.001), name=name,
                 conv_general_dilated=pointwise_conv.conv)


def max_pool2(x: Array) -> Array:
  """2x2 max-pool, stride 2, of [B, H, W, C] (an odd last row or column is
  dropped): the output grid stays centred on the input's.

  Written as a max over a reshape rather than `nn.max_pool`: the gradient
  of a windowed max is a select-and-scatter, which XLA:CPU expands into
  iotas and a scatter that took about a sixth of the hourglass training
  step; this one's is an elementwise mask. (Where a window holds equal
  maxima the gradient is shared among them instead of going to one.)
  """
  b, h, w, c = x.shape
  x = x[:, :h - h % 2, :w - w % 2]
  return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def upsample2(x: Array) -> Array:
  """Nearest-neighbour x2 upsampling of [B, H, W, C], `max_pool2` reversed."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ConvBNReLU(nn.Module):
  """Conv, BatchNorm, ReLU (post-activation).

  The conv has no bias: BatchNorm's mean subtraction would cancel it.
  """
  features: int
  kernel_size: int
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = conv(self.features, self.kernel_size, self.dtype,
             strides=self.strides, use_bias=False)(x)
    return nn.relu(batch_norm(train, self.dtype)(x))


class SeparableConv3x3(nn.Module):
  """MobileNet-style depthwise 3x3, BatchNorm, ReLU, pointwise 1x1.

  A drop-in for a 3x3 conv with C inputs and `features` outputs at about
  (9 C + C * features) instead of 9 C * features weights. No biases: in the
  residual module the output goes straight into a BatchNorm.
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    channels = x.shape[-1]
    x = conv(channels, 3, self.dtype, use_bias=False, groups=channels,
             name='depthwise')(x)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    return conv(self.features, 1, self.dtype, use_bias=False,
                name='pointwise')(x)


class Residual(nn.Module):
  """Pre-activation bottleneck residual module of the stacked hourglass.

  BN-ReLU-conv1x1(C/2), BN-ReLU-conv3x3(C/2), BN-ReLU-conv1x1(C), added to the
  input (through a 1x1 conv when the channel count changes), as in Newell et
  al.'s Torch code. Convs feeding a BatchNorm carry no bias (it would be
  cancelled); the two convs whose outputs are summed keep theirs.

  Attributes:
    features: output channels C.
    separable: replace the 3x3 conv by `SeparableConv3x3`.
    dtype: computation dtype.
  """
  features: int
  separable: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    skip = x
    if x.shape[-1] != self.features:
      skip = conv(self.features, 1, self.dtype, name='skip')(x)
    mid = self.features // 2
    y = nn.relu(batch_norm(train, self.dtype)(x))
    y = conv(mid, 1, self.dtype, use_bias=False)(y)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    if self.separable:
      y = SeparableConv3x3(mid, self.dtype)(y, train)
    else:
      y = conv(mid, 3, self.dtype, use_bias=False)(y)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    return skip + conv(self.features, 1, self.dtype)(y)


def stacked_heatmaps(heatmaps: list[Array]) -> dict[str, Array]:
  """The model output: per-stage heatmaps stacked to float32 [S, B, h, w, K].

  Float32 whatever the compute dtype, so losses and decoding never see
  bfloat16.
  """
  return {'heatmaps': jnp.stack(heatmaps).astype(jnp.float32)}


def check_divisible(images: Array, multiple: int, model: str, why: str):
  """Raises ValueError unless the image height and width divide `multiple`."""
  height, width = images.shape[1:3]
  if height % multiple or width % multiple:
    raise ValueError(
        f'{model} needs input height and width divisible by {multiple} '
        f'({why}); got {height}x{width}')
