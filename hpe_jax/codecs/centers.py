"""Person centres and boxes (CenterNet, Zhou et al. 2019): the detector codec.

A person is a peak of a centre heatmap at the detector's feature stride,
plus its box size (regressed as log width and height in feature pixels)
and the sub-cell offset of its centre, both read at the peak. Everything is
static-shape: targets are made for a fixed number of (padded) people, and
decoding keeps a fixed number of peaks (`jax.lax.top_k`) with their scores,
so a detection threshold is a validity mask, not a change of shape. That is
what lets the whole detector + RoI head compile once under `jit` on any
backend, TPUs included, with no NMS loop: a 3x3 max-pool keeps local maxima
only.

Coordinates: boxes are (x1, y1, x2, y2) in continuous input pixels (pixel
i covers [i, i + 1)); feature cell i covers input pixels [i s, (i + 1) s).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# TTFNet's elliptical Gaussians: sigma = alpha * side / 6 per axis.
_GAUSSIAN_ALPHA = 0.54
_MIN_SIGMA = 0.5
_MIN_SIDE = 1e-3


def box_centers(boxes, stride: int):
  """Centre cells [..., 2] (int32 x, y), their offsets and log sizes.

  Args:
    boxes: [..., 4] boxes in input pixels.
    stride: input pixels per feature cell.

  Returns:
    (cells int32 [..., 2], offsets [..., 2] in cells, log_sizes [..., 2] =
    log of width and height in cells).
  """
  boxes = jnp.asarray(boxes, jnp.float32)
  center = (boxes[..., :2] + boxes[..., 2:]) / (2 * stride) - 0.5
  cells = jnp.round(center)
  size = jnp.maximum(boxes[..., 2:] - boxes[..., :2], _MIN_SIDE) / stride
  return cells.astype(jnp.int32), center - cells, jnp.log(size)


def center_targets(boxes, valid, size: tuple[int, int], stride: int):
  """The training targets of the detector for padded people.

  Args:
    boxes: [B, N, 4] person boxes in input pixels.
    valid: [B, N] which rows are people.
    size: (h, w) of the feature map.
    stride: input pixels per feature cell.

  Returns:
    dict of ``heatmap`` [B, h, w] (an elliptical Gaussian of peak 1 at each
    person's centre cell, merged by maximum), ``index`` int32 [B, N] (the
    flat centre cell), ``offset`` [B, N, 2], ``log_size`` [B, N, 2] and
    ``weight`` [B, N] (valid people whose centre cell is on the map).
  """
  h, w = size
  cells, offset, log_size = box_centers(boxes, stride)
  sides = jnp.exp(log_size)
  sigma = jnp.maximum(_GAUSSIAN_ALPHA * sides / 6, _MIN_SIGMA)
  on_map = ((cells >= 0) & (cells < jnp.array([w, h]))).all(-1)
  weight = (jnp.asarray(valid) & on_map).astype(jnp.float32)
  xs = jnp.arange(w, dtype=jnp.float32)
  ys = jnp.arange(h, dtype=jnp.float32)
  gx = jnp.exp(-(xs - cells[..., 0:1]) ** 2 / (2 * sigma[..., 0:1] ** 2))
  gy = jnp.exp(-(ys - cells[..., 1:2]) ** 2 / (2 * sigma[..., 1:2] ** 2))
  per_person = gy[..., :, None] * gx[..., None, :] * weight[..., None, None]
  index = jnp.clip(cells[..., 1], 0, h - 1) * w + jnp.clip(cells[..., 0], 0,
                                                          w - 1)
  return dict(heatmap=per_person.max(axis=1), index=index, offset=offset,
              log_size=log_size, weight=weight)


def gather_cells(maps, index):
  """Values [B, N, C] of maps [B, h, w, C] at flat cell indices [B, N]."""
  b, h, w, c = maps.shape
  flat = maps.reshape(b, h * w, c)
  return jnp.take_along_axis(flat, index[..., None], axis=1)


def decode_detections(center_logits, log_sizes, offsets, stride: int,
                      max_detections: int, image_size: tuple[int, int]):
  """The `max_detections` highest centre peaks as boxes, best first.

  Args:
    center_logits: [B, h, w] centre heatmap logits.
    log_sizes: [B, h, w, 2] predicted log width and height in cells.
    offsets: [B, h, w, 2] predicted centre offsets in cells.
    stride: input pixels per feature cell.
    max_detections: D, the number of peaks kept.
    image_size: (H, W) of the input; boxes are clipped to it.

  Returns:
    (boxes [B, D, 4] in input pixels, scores [B, D] in [0, 1]); rows past
    the real peaks have score 0.
  """
  b, h, w = center_logits.shape
  heat = jax.nn.sigmoid(center_logits.astype(jnp.float32))
  pooled = jax.lax.reduce_window(heat, -jnp.inf, jax.lax.max, (1, 3, 3),
                                 (1, 1, 1), 'SAME')
  peaks = jnp.where(heat >= pooled, heat, 0.0).reshape(b, h * w)
  scores, index = jax.lax.top_k(peaks, min(max_detections, h * w))
  if max_detections > h * w:
    pad = max_detections - h * w
    scores = jnp.pad(scores, ((0, 0), (0, pad)))
    index = jnp.pad(index, ((0, 0), (0, pad)))
  y, x = jnp.divmod(index, w)
  cells = jnp.stack([x, y], -1).astype(jnp.float32)
  center = (cells + gather_cells(offsets.astype(jnp.float32), index) +
            0.5) * stride
  half = jnp.exp(gather_cells(log_sizes.astype(jnp.float32), index)
                 ) * stride / 2
  limit = jnp.array([image_size[1], image_size[0]] * 2, jnp.float32)
  boxes = jnp.clip(jnp.concatenate([center - half, center + half], -1), 0,
                   limit)
  return boxes, scores
