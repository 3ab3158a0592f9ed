"""RoIAlign, its inverse (pasting RoI maps back) and RoI label crops in JAX.

These are the box-to-grid operations of a two-stage (RoI-head) model: pool a
fixed-size feature grid per box, paste per-box predictions back into the
image at inference, and cut per-box integer mask targets for training.

Coordinates. Boxes are (x1, y1, x2, y2) in continuous input-image pixel
coordinates: pixel ``i`` covers ``[i, i + 1)``, so its centre is at
``i + 0.5``. ``roi_align`` follows torchvision.ops.roi_align / Detectron2
ROIAlignV2 exactly (for a positive ``sampling_ratio``): with ``aligned=True``
half a pixel is subtracted to move from continuous to pixel-index
coordinates; with ``aligned=False`` it is not (the original Mask R-CNN
behaviour) and the RoI is at least one feature pixel wide.

Design. RoIAlign is usually written as a gather of four neighbours per
sample point. Gathers with data-dependent indices are slow on TPUs and their
gradient is a scatter-add. Instead we use the fact that bilinear sampling on
an axis-aligned grid of points is separable: every output cell is

  out[b, k, i, j] = sum_h sum_w Wy[b, k, i, h] * Wx[b, k, j, w] * F[b, h, w]

where ``Wy`` [B, K, out_h, H] holds, for output row ``i``, the 1-D bilinear
weights averaged over its ``sampling_ratio`` sample rows (the "samples outside
the map read zero" rule is a product of a row and a column indicator, so it is
separable too), and ``Wx`` likewise. Building the small dense interpolation
matrices is elementwise array code with static shapes, and applying them is
two batched matmuls, which run on the MXU / tensor cores, need no gathers or
scatters, and give exact gradients with respect to the features (and, through
the fractional parts of the sample positions, the boxes). The price is
``O(K * H * W * out_w * C)`` multiply-adds instead of
``O(K * out_h * out_w * sampling_ratio**2 * C)``; for RoI heads on the
stride-4..32 feature maps of pose/segmentation models that is cheap, and on
an accelerator the matmul form is still the faster one.

``paste_rois`` is the same construction in the other direction (image pixels
sampling the RoI grid). ``crop_labels`` samples integer labels with nearest
neighbour; it uses a gather because labels carry no gradient and class ids
must not round-trip through a float matmul.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def _pair(size):
  """(h, w) from an int or a pair."""
  if isinstance(size, int):
    return size, size
  h, w = size
  return int(h), int(w)


def _linear_taps(coords, size: int):
  """1-D linear-interpolation weights [..., size] at coords [...].

  Coords must already be clamped to [0, size - 1]. The weights are built as
  one-hot(floor) * (1 - frac) + one-hot(floor + 1) * frac rather than
  relu(1 - |grid - c|) because then each row sums to exactly 1 in float32
  (a constant map is reproduced bit for bit).
  """
  low = jnp.floor(coords)
  frac = (coords - low)[..., None]
  low = low[..., None]
  grid = jnp.arange(size, dtype=jnp.float32)
  return (jnp.where(grid == low, 1.0 - frac, 0.0)
          + jnp.where(grid == low + 1.0, frac, 0.0))


def _sample_weights(start, bin_size, out: int, sampling_ratio: int,
                    size: int):
  """Averaged bilinear weights [B, K, out, size] of RoIAlign along one axis.

  Args:
    start: [B, K] RoI start in feature pixel-index coordinates.
    bin_size: [B, K] extent of one output cell in feature pixels.
    out: number of output cells along the axis.
    sampling_ratio: sample points per cell along the axis.
    size: feature map length along the axis.
  """
  cell = jnp.arange(out, dtype=jnp.float32)[:, None]
  sub = (jnp.arange(sampling_ratio, dtype=jnp.float32) + 0.5)[None, :]
  start = start[..., None, None]
  bin_size = bin_size[..., None, None]
  # Same operation order as torchvision so float32 positions agree.
  pos = start + cell * bin_size + sub * bin_size / sampling_ratio
  # torchvision: samples beyond one pixel outside the map read zero; the
  # rest are clamped onto the map (y <= 0 -> 0, floor(y) >= size-1 ->
  # size-1), which is exactly a clip to [0, size - 1].
  inside = ((pos >= -1.0) & (pos <= size)).astype(jnp.float32)
  weights = _linear_taps(jnp.clip(pos, 0.0, size - 1.0), size)
  return jnp.mean(weights * inside[..., None], axis=-2)


def roi_align(features, boxes, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = 2, aligned: bool = True):
  """RoIAlign with the semantics of torchvision.ops.roi_align.

  Args:
    features: [B, H, W, C] feature maps, any float dtype.
    boxes: [B, K, 4] (x1, y1, x2, y2) per image, in continuous input-image
      pixel coordinates.
    output_size: int or (out_h, out_w).
    spatial_scale: feature pixels per input pixel (1 / stride).
    sampling_ratio: sample points per output cell along each axis; must be
      positive (static).
    aligned: subtract half a pixel after scaling (Detectron2 ROIAlignV2);
      False reproduces the original, misaligned RoIAlign.

  Returns:
    [B, K, out_h, out_w, C] in features.dtype: each cell is the mean of its
    sampling_ratio**2 bilinear samples; samples more than one pixel outside
    the map read zero.

  Raises:
    ValueError: for a non-positive sampling_ratio, whose adaptive sample
      count (ceil(roi_size / output_size) per box) has no static shape.
  """
  if sampling_ratio <= 0:
    raise ValueError(
        f'sampling_ratio must be positive, got {sampling_ratio}: the '
        'adaptive mode (<= 0) picks ceil(roi_size / output_size) samples per '
        'box, a data-dependent count that cannot have a static shape under '
        'jit.')
  out_h, out_w = _pair(output_size)
  _, height, width, _ = features.shape
  boxes = jnp.asarray(boxes, jnp.float32) * spatial_scale
  offset = 0.5 if aligned else 0.0
  x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:
    roi_w = jnp.maximum(roi_w, 1.0)
    roi_h = jnp.maximum(roi_h, 1.0)
  wy = _sample_weights(y1 - offset, roi_h / out_h, out_h, sampling_ratio,
                       height)
  wx = _sample_weights(x1 - offset, roi_w / out_w, out_w, sampling_ratio,
                       width)
  f = features.astype(jnp.float32)
  # Contract W first, then H: each step is a batched matmul, and the
  # intermediate holds out_w columns per map row instead of W.
  rows = jnp.einsum('bkjw,bhwc->bkhjc', wx, f, precision=_HIGHEST)
  out = jnp.einsum('bkih,bkhjc->bkijc', wy, rows, precision=_HIGHEST)
  return out.astype(features.dtype)


def _paste_weights(lo, hi, size: int, cells: int):
  """Weights [B, K, size, cells] of image pixels sampling a RoI grid axis."""
  extent = hi - lo
  ok = extent > 0
  # Degenerate boxes paste nothing; the safe extent only keeps their (masked)
  # positions and gradients finite.
  safe = jnp.where(ok, extent, 1.0)[..., None]
  centres = jnp.arange(size, dtype=jnp.float32) + 0.5
  lo = lo[..., None]
  inside = (centres >= lo) & (centres <= hi[..., None]) & ok[..., None]
  u = (centres - lo) / safe * cells - 0.5
  weights = _linear_taps(jnp.clip(u, 0.0, cells - 1.0), cells)
  return weights * inside[..., None].astype(jnp.float32)


def paste_rois(values, boxes, image_size):
  """Pastes per-RoI maps back into the image (the inverse of roi_align).

  Each image pixel whose centre lies inside its box (edges included) reads
  the RoI grid bilinearly at its position in cell-index coordinates,
  ``u = (x + 0.5 - x1) / (x2 - x1) * m_w - 0.5`` (and ``v`` likewise),
  clamped to the grid (edge replication); pixels outside the box, and every
  pixel of a box with zero or negative width or height, are 0.

  Args:
    values: [B, K, m_h, m_w, C] per-RoI maps.
    boxes: [B, K, 4] (x1, y1, x2, y2) in continuous image pixel coordinates.
    image_size: (H, W) of the output.

  Returns:
    [B, K, H, W, C] float32.
  """
  height, width = _pair(image_size)
  m_h, m_w = values.shape[2], values.shape[3]
  boxes = jnp.asarray(boxes, jnp.float32)
  x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
  py = _paste_weights(y1, y2, height, m_h)
  px = _paste_weights(x1, x2, width, m_w)
  v = values.astype(jnp.float32)
  cols = jnp.einsum('bkxn,bkmnc->bkmxc', px, v, precision=_HIGHEST)
  return jnp.einsum('bkym,bkmxc->bkyxc', py, cols, precision=_HIGHEST)


def crop_labels(labels, boxes, output_size, fill=0):
  """Nearest-neighbour crops of integer label maps, one per RoI.

  Cell (i, j) reads the pixel containing its centre,
  ``x = x1 + (j + 0.5) * (x2 - x1) / out_w`` (and ``y`` likewise), i.e. pixel
  ``floor(x)``; centres outside the image read `fill`. This is a gather
  (K * out_h * out_w reads per image): labels need no gradient, and a one-hot
  float matmul would be both larger and inexact for big class ids.

  Args:
    labels: [B, H, W] integer label maps.
    boxes: [B, K, 4] (x1, y1, x2, y2) in continuous pixel coordinates.
    output_size: int or (out_h, out_w).
    fill: value of cells whose centre falls outside the image.

  Returns:
    [B, K, out_h, out_w] with labels' dtype.
  """
  out_h, out_w = _pair(output_size)
  batch, height, width = labels.shape
  boxes = jnp.asarray(boxes, jnp.float32)
  x1, y1, x2, y2 = (boxes[..., i] for i in range(4))

  def pixel_index(lo, hi, out, size):
    cell = jnp.arange(out, dtype=jnp.float32) + 0.5
    centre = lo[..., None] + cell * (hi - lo)[..., None] / out
    # Clip before the int cast (huge or inf boxes would overflow it); the
    # ends still floor to out-of-range indices and so read `fill`.
    index = jnp.floor(jnp.clip(centre, -1.0, size)).astype(jnp.int32)
    return index, (index >= 0) & (index < size)

  iy, valid_y = pixel_index(y1, y2, out_h, height)
  ix, valid_x = pixel_index(x1, x2, out_w, width)
  flat = (jnp.clip(iy, 0, height - 1)[..., :, None] * width
          + jnp.clip(ix, 0, width - 1)[..., None, :])
  picked = jnp.take_along_axis(labels.reshape(batch, height * width),
                               flat.reshape(batch, -1), axis=1)
  picked = picked.reshape(flat.shape)
  valid = valid_y[..., :, None] & valid_x[..., None, :]
  return jnp.where(valid, picked, jnp.asarray(fill, labels.dtype))
