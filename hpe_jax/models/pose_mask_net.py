"""Pose-conditioned person-mask network.

Given a person crop (cropped, centred and scaled by the person box) and that
person's keypoints, predicts the person's mask. An encoder-decoder with skip
connections: a 7x7 stride-2 conv first, then the pose map (one Gaussian bump
per joint, drawn at that stride-2 resolution) is concatenated to its output;
3x3 stride-2 convs go down, nearest upsampling and 3x3 convs come back up,
joining the encoder's features of each resolution; leaky ReLU throughout.

The decoder predicts a residual added to the log-odds of a prior mask drawn
from the skeleton (Gaussian limbs between joint pairs,
`hpe_jax.ops.skeleton_prior`). The output is
``tanh((residual + logit(prior)) / 2) = 2 * sigmoid(residual +
logit(prior)) - 1`` in (-1, 1): the prior alone gives ``2 * prior - 1``, the
network learns where to move it, and a pixel is the person where the output
is above 0. The residual conv starts at zero, so the untrained model
predicts the prior.

Pose-map and prior widths are fractions of the crop height, since crops are
scaled to the person.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hpe_jax.codecs import heatmap
from hpe_jax.models import layers
from hpe_jax.ops import skeleton_prior

Array = Any
_PRIOR_CLIP = 1e-3


class _ConvBNLeaky(nn.Module):
  features: int
  kernel_size: int = 3
  strides: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = layers.conv(self.features, self.kernel_size, self.dtype,
                    strides=self.strides, use_bias=False)(x)
    return nn.leaky_relu(layers.batch_norm(train, self.dtype)(x), 0.1)


class PoseMaskNet(nn.Module):
  """Person mask from an image crop and the person's keypoints.

  Attributes:
    num_joints: K, the joints of the pose map (14 for LSP-14).
    limbs: the skeleton's limbs as joint index pairs (from the dataset's
      skeleton; the prior is drawn along them).
    features: channels after the first conv; doubled at every level down.
    levels: stride-2 stages (the first is the 7x7 conv).
    pose_sigma: pose-map Gaussian sigma, as a fraction of the crop height.
    limb_sigma: prior limb Gaussian sigma, as a fraction of the crop height.
    dtype: computation dtype.
  """
  num_joints: int
  limbs: tuple[tuple[int, int], ...] = ()
  features: int = 32
  levels: int = 4
  pose_sigma: float = 0.015
  limb_sigma: float = 0.04
  dtype: Any = jnp.float32

  output_stride: ClassVar[int] = 1

  @nn.compact
  def __call__(self, images: Array, keypoints: Array,
               train: bool) -> dict[str, Array]:
    """Returns {'mask': [B, H, W] in (-1, 1), 'prior': [B, H, W] in [0, 1]}.

    Args:
      images: [B, H, W, 3] normalised crops.
      keypoints: [B, K, 3] x, y (input pixels) and visibility (0 unlabelled).
      train: BatchNorm in training mode.
    """
    layers.check_divisible(images, 2 ** self.levels, 'PoseMaskNet',
                           f'{self.levels} stride-2 stages')
    if not self.limbs:
      raise ValueError('PoseMaskNet needs the skeleton limbs to draw its '
                       'prior')
    if keypoints.shape[-2] != self.num_joints:
      raise ValueError(f'PoseMaskNet has {self.num_joints} joints, got '
                       f'keypoints of shape {keypoints.shape}')
    h, w = images.shape[1:3]
    kp = keypoints.astype(jnp.float32)
    x = _ConvBNLeaky(self.features, 7, 2, self.dtype)(
        images.astype(self.dtype), train)
    # The stride-2 grid is centre-aligned with the input's.
    half_xy = (kp[..., :2] + 0.5) / 2 - 0.5
    pose = heatmap.gaussian_heatmaps(half_xy, kp[..., 2], (h // 2, w // 2),
                                      self.pose_sigma * h / 2, self.dtype)
    x = jnp.concatenate([x, pose], axis=-1)
    skips = []
    for level in range(1, self.levels):
      skips.append(x)
      features = self.features * 2 ** level
      x = _ConvBNLeaky(features, 3, 2, self.dtype)(x, train)
      x = _ConvBNLeaky(features, 3, 1, self.dtype)(x, train)
    for level in reversed(range(self.levels - 1)):
      features = self.features * 2 ** level
      x = _ConvBNLeaky(features, 3, 1, self.dtype)(layers.upsample2(x),
                                                   train)
      x = jnp.concatenate([skips[level], x], axis=-1)
      x = _ConvBNLeaky(features, 3, 1, self.dtype)(x, train)
    x = _ConvBNLeaky(self.features, 3, 1, self.dtype)(layers.upsample2(x),
                                                      train)
    residual = nn.Conv(1, (3, 3), padding='SAME', dtype=self.dtype,
                       param_dtype=jnp.float32,
                       kernel_init=nn.initializers.zeros,
                       name='residual')(x)[..., 0].astype(jnp.float32)
    prior = skeleton_prior.limb_prior(kp, np.asarray(self.limbs, np.int32),
                                      (h, w), self.limb_sigma * h)
    p = jnp.clip(prior, _PRIOR_CLIP, 1 - _PRIOR_CLIP)
    mask = jnp.tanh((residual + jnp.log(p) - jnp.log1p(-p)) / 2)
    return {'mask': mask, 'prior': prior}
