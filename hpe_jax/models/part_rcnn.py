"""Top-down multi-person body parts: a person detector plus a RoIAlign head.

One network finds every person in a full image and, for each, predicts a
mask of 7 channels (the body parts and the whole body) and keypoint
heatmaps (Mask R-CNN's design, He et al. 2017, with a different detector).

* **Backbone**: a small encoder-decoder (strided ConvBNReLU down to stride
  4 * 2**levels, nearest upsampling with skip additions back up) giving
  one feature map at stride 4.
* **Detector**: CenterNet (Zhou et al. 2019; `codecs.centers`): a
  centre heatmap plus log box size and centre offset per cell, decoded to
  the `max_detections` best peaks with `top_k`. It was chosen over anchors
  and region proposals because every shape is fixed (no proposal sampling,
  no NMS loop, a score threshold is a mask), so detector and head compile
  once under `jit` and run on TPUs as they do on GPUs, and because one
  stride-4 map serves both the detector and RoIAlign.
* **RoI head**: RoIAlign (`ops.roi_align`) of mask_size / 4 cells from the
  stride-4 map, `head_convs` 3x3 convs with GroupNorm (the padded RoIs of a
  batch must not enter normalisation statistics, as BatchNorm's would), a
  x2 transposed conv, then a skip: the RoI's mask_size / 2 cells of the
  stride-2 stem features are joined and mixed by one more conv (people a
  few dozen pixels tall span few stride-4 cells; in the smoke run the skip
  lowered the body-mask loss a little, 0.481 after 400 steps without it,
  0.472 after 300 with it), a second x2 transposed
  conv to ``mask_size``, and a 1x1 conv to the 7 mask logits. The keypoint
  branch reads the head at mask_size / 2, after the skip, and its logits
  are resized bilinearly to mask_size.

In training the RoIs are the ground-truth boxes (the first `max_rois`
people of each image, the largest ones), jittered by up to `box_jitter` of
their size with the ``'jitter'`` RNG stream, so the head learns from boxes
as imprecise as detected ones. At inference they are the decoded
detections. Outputs are in input pixels (``output_stride`` 1): the task
makes all targets from full-resolution label maps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpe_jax.codecs import centers
from hpe_jax.models import layers
from hpe_jax.ops import roi_align

Array = Any

FEATURE_STRIDE = 4
# Focal-loss heads start at a prior probability of 0.01 per cell (RetinaNet):
# otherwise the many background cells swamp the first steps.
_CENTER_PRIOR_BIAS = -4.6


class _Backbone(nn.Module):
  """Encoder-decoder from images to one stride-4 feature map."""
  features: int
  levels: int
  dtype: Any

  @nn.compact
  def __call__(self, x: Array, train: bool) -> tuple[Array, Array]:
    """(stride-4 features, the stride-2 stem features)."""
    f = self.features
    stem = layers.ConvBNReLU(f // 2, 3, strides=2, dtype=self.dtype)(x, train)
    x = layers.ConvBNReLU(f, 3, strides=2, dtype=self.dtype)(stem, train)
    skips = []
    for level in range(self.levels):
      skips.append(x)
      x = layers.ConvBNReLU(f * 2 ** (level + 1), 3, strides=2,
                            dtype=self.dtype)(x, train)
      x = layers.ConvBNReLU(f * 2 ** (level + 1), 3, dtype=self.dtype)(
          x, train)
    for skip in reversed(skips):
      x = layers.upsample2(x)
      x = layers.conv(skip.shape[-1], 1, self.dtype)(x) + skip
      x = layers.ConvBNReLU(skip.shape[-1], 3, dtype=self.dtype)(x, train)
    return x, stem


class _Head(nn.Module):
  """3x3 conv, ReLU, 1x1 conv: one dense output of the detector."""
  features: int
  outputs: int
  dtype: Any
  bias: float = 0.0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.relu(layers.conv(self.features, 3, self.dtype)(x))
    return nn.Conv(self.outputs, (1, 1), dtype=self.dtype,
                   param_dtype=jnp.float32,
                   bias_init=nn.initializers.constant(self.bias))(x)


class _RoIHead(nn.Module):
  """Mask logits [R, m, m, parts + 1] and keypoint logits [R, m, m, K] of
  RoI features [R, m/4, m/4, C] and fine RoI features [R, m/2, m/2, C']."""
  num_parts: int
  num_joints: int
  features: int
  convs: int
  dtype: Any

  def _up(self, x):
    x = nn.ConvTranspose(self.features, (2, 2), strides=(2, 2),
                         dtype=self.dtype, param_dtype=jnp.float32)(x)
    return nn.relu(x)

  def _conv_gn_relu(self, x):
    x = layers.conv(self.features, 3, self.dtype)(x)
    return nn.relu(nn.GroupNorm(num_groups=min(8, self.features),
                                dtype=self.dtype, param_dtype=jnp.float32)(x))

  @nn.compact
  def __call__(self, x: Array, fine: Array) -> tuple[Array, Array]:
    for _ in range(self.convs):
      x = self._conv_gn_relu(x)
    x = self._conv_gn_relu(jnp.concatenate([self._up(x), fine], -1))
    k = nn.relu(layers.conv(self.features, 3, self.dtype)(x))
    k = layers.conv(self.num_joints, 1, self.dtype)(k)
    r, h, w, _ = k.shape
    keypoints = jax.image.resize(k, (r, 2 * h, 2 * w, self.num_joints),
                                 'bilinear')
    masks = layers.conv(self.num_parts + 1, 1, self.dtype)(self._up(x))
    return masks, keypoints


class PartRCNN(nn.Module):
  """Person detector + per-person part masks and keypoints (see the module
  docstring).

  Call with ``images`` [B, H, W, 3] (H, W divisible by 4 * 2**levels) and,
  in training, ``boxes`` [B, N, 4] and ``box_valid`` [B, N] (the ground
  truth, padded). Returns a dict of:

  * ``center_logits`` [B, H/4, W/4], ``log_sizes`` and ``offsets``
    [B, H/4, W/4, 2]: the dense detector outputs;
  * ``rois`` [B, R, 4] (input pixels): the jittered ground-truth boxes
    (R = min(N, max_rois)) in training, the detections (R =
    max_detections, best first) at inference;
  * ``roi_valid`` [B, R] in training, ``scores`` [B, R] at inference;
  * ``mask_logits`` [B, R, m, m, num_parts + 1] (channel num_parts is the
    whole body), ``keypoint_logits`` [B, R, m, m, num_joints], m =
    mask_size, on the RoI's own grid.
  """
  num_joints: int
  num_parts: int = 6
  features: int = 64
  levels: int = 3
  head_features: int = 128
  head_convs: int = 4
  mask_size: int = 56
  max_detections: int = 20
  max_rois: int = 8
  box_jitter: float = 0.1
  dtype: Any = jnp.float32

  output_stride: ClassVar[int] = 1

  @nn.compact
  def __call__(self, images: Array, train: bool, boxes: Array | None = None,
               box_valid: Array | None = None) -> dict[str, Array]:
    if self.mask_size % 4:
      raise ValueError(f'mask_size must be a multiple of 4: {self.mask_size}')
    layers.check_divisible(images, FEATURE_STRIDE * 2 ** self.levels,
                           'part_rcnn', f'{self.levels} backbone levels')
    x, stem = _Backbone(self.features, self.levels, self.dtype)(
        images.astype(self.dtype), train)
    out = {
        'center_logits': _Head(self.features, 1, self.dtype,
                               _CENTER_PRIOR_BIAS, name='center')(x)[..., 0],
        'log_sizes': _Head(self.features, 2, self.dtype, name='size')(x),
        'offsets': _Head(self.features, 2, self.dtype, name='offset')(x),
    }
    if train:
      if boxes is None or box_valid is None:
        raise ValueError('training needs the ground-truth boxes and '
                         'box_valid')
      rois = self._jitter(jnp.asarray(boxes, jnp.float32)[:, :self.max_rois])
      out['roi_valid'] = jnp.asarray(box_valid)[:, :self.max_rois]
    else:
      rois, out['scores'] = centers.decode_detections(
          out['center_logits'], out['log_sizes'], out['offsets'],
          FEATURE_STRIDE, self.max_detections, images.shape[1:3])
      rois = jax.lax.stop_gradient(rois)
    out['rois'] = rois
    b, r = rois.shape[:2]
    cells = roi_align.roi_align(x, rois, self.mask_size // 4,
                                spatial_scale=1 / FEATURE_STRIDE)
    fine = roi_align.roi_align(stem, rois, self.mask_size // 2,
                               spatial_scale=2 / FEATURE_STRIDE)
    masks, keypoints = _RoIHead(
        self.num_parts, self.num_joints, self.head_features, self.head_convs,
        self.dtype)(cells.reshape(b * r, *cells.shape[2:]),
                    fine.reshape(b * r, *fine.shape[2:]))
    out['mask_logits'] = masks.reshape(b, r, *masks.shape[1:])
    out['keypoint_logits'] = keypoints.reshape(b, r, *keypoints.shape[1:])
    return out

  def _jitter(self, boxes: Array) -> Array:
    if not self.box_jitter:
      return boxes
    size = boxes[..., 2:] - boxes[..., :2]
    noise = jax.random.uniform(self.make_rng('jitter'), boxes.shape,
                               minval=-self.box_jitter,
                               maxval=self.box_jitter)
    return boxes + noise * jnp.concatenate([size, size], -1)
