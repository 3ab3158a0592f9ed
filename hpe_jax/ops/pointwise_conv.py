"""1x1 convolutions whose gradients are matrix products.

A 1x1, stride-1 convolution of [B, H, W, C] pixels is the matrix product of
the [B*H*W, C] pixel matrix with the [C, C'] kernel. XLA:CPU runs its
forward pass well as a convolution, but differentiates it into a
weight-gradient convolution whose window is the whole image, which ran at a
fraction of a matrix product's speed: in the hourglass training step those
convolutions took about a fifth of the time
(``benchmarks/hourglass_vs_torch.py``). `conv` keeps the forward
convolution (evaluation stays as fast) and computes both gradients as
matrix products. The results equal `jax.lax.conv_general_dilated`'s to
float rounding (tested).
"""

from __future__ import annotations

import functools

import jax
from jax import lax

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def _forward(x, kernel, precision):
  return lax.conv_general_dilated(x, kernel, (1, 1), 'VALID',
                                  dimension_numbers=_NHWC,
                                  precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pointwise(x, kernel, precision):
  return _forward(x, kernel, precision)


def _pointwise_fwd(x, kernel, precision):
  return _forward(x, kernel, precision), (x, kernel)


def _pointwise_bwd(precision, residuals, dy):
  x, kernel = residuals
  weights = kernel[0, 0]  # [C, C']
  pixels, grads = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
  dx = lax.dot_general(grads, weights, (((1,), (1,)), ((), ())),
                       precision=precision)
  dw = lax.dot_general(pixels, grads, (((0,), (0,)), ((), ())),
                       precision=precision)
  return (dx.reshape(x.shape).astype(x.dtype),
          dw.reshape(kernel.shape).astype(kernel.dtype))


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def conv(lhs, rhs, window_strides, padding, *, lhs_dilation=None,
         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
         precision=None):
  """`lax.conv_general_dilated` of a 1x1, stride-1, ungrouped NHWC conv, as
  flax's ``nn.Conv(conv_general_dilated=...)`` calls it."""
  # The flax layer passes NHWC / HWIO numbers; anything else is a misuse.
  undilated = all(d is None or tuple(d) == (1, 1)
                  for d in (lhs_dilation, rhs_dilation))
  unpadded = padding in ('SAME', 'VALID') or all(
      tuple(p) == (0, 0) for p in padding)
  if (rhs.shape[:2] != (1, 1) or tuple(window_strides) != (1, 1)
      or feature_group_count != 1 or not undilated or not unpadded
      or lhs.ndim != 4):
    raise ValueError('pointwise_conv.conv takes 1x1, stride-1, ungrouped, '
                     'undilated, unpadded 2-D convolutions only')
  del dimension_numbers  # flax's default for 2-D: NHWC, HWIO
  return _pointwise(lhs, rhs, precision)
