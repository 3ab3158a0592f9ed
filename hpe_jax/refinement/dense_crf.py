"""Dense CRF over a network's class probabilities, mean-field in JAX.

The model of Krähenbühl & Koltun (2011): unaries ``U_i(l) = -log P_i(l)``
from the network, a Potts compatibility (a pair of pixels pays ``k(i, j)``
when their labels differ) and the kernel

  k(i, j) = w_g exp(-|p_i - p_j|^2 / 2 s_g^2)
          + w_b exp(-|p_i - p_j|^2 / 2 s_xy^2 - |I_i - I_j|^2 / 2 s_rgb^2)

of pixel positions p (pixels) and colours I (0-255 units): a Gaussian
smoothness term and a bilateral appearance term. Mean-field starts from
``Q = P`` and repeats, for every pixel at once,

  Q_i(l) ∝ exp(-U_i(l) + sum_{j != i} k(i, j) Q_j(l)),

which is the Potts update: the cost ``sum_j k(i, j) (1 - Q_j(l))`` differs
from ``-sum_j k(i, j) Q_j(l)`` by a constant across labels.

The kernel is truncated to a square window (as in ConvCRF, Teichmann &
Cipolla 2018): pixel i receives messages only from the ``window x window``
pixels centred on it, itself excluded; pixels outside the image contribute
nothing. With a window of ``2 max(H, W) - 1`` this is the full dense CRF.
The sum over the window's offsets is array code over the whole image per
offset, so the cost is ``window^2 H W C`` per iteration.

`mean_field` takes its `CrfParams` as traced scalars: under ``jax.vmap``
over a batched `CrfParams` (`stack_params`) a grid of settings runs as one
program, and changing the values compiles nothing. The window and the
iteration count are static. `refine` is the batched form evaluators call
inside their jitted step; `load_params` reads what
``python -m hpe_jax.evaluation.refine_search`` chose for a run.
"""

from __future__ import annotations

import json
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax import errors
from hpe_jax.runtime import storage

# Probabilities are floored before the log so that a saturated network
# output (tanh at +-1 in float32) leaves a finite unary that strong
# agreement of the neighbours can still overturn (-log 1e-5 = 11.5).
PROB_FLOOR = 1e-5
# What `refine_search` writes in a run's workdir and `load_params` reads.
SEARCH_FILE = 'refine_search.json'


class CrfParams(NamedTuple):
  """The kernel's weights and widths (pixels; colours in 0-255 units).

  A NamedTuple is a pytree: its fields may be Python floats, traced
  scalars, or arrays with a leading axis to vmap over (`stack_params`).
  """
  spatial_weight: float
  spatial_sigma: float
  bilateral_weight: float
  bilateral_sigma_xy: float
  bilateral_sigma_rgb: float


# The kernel is not normalised: a weight times the kernel's sum over the
# window is the most evidence (nats) a pixel's neighbours can give it.
# Spatial sigma 1 sums to 5.3 over the neighbours, so weight 0.5 gives up
# to 2.6 nats: an isolated pixel less sure than ~0.93 turns to its
# neighbours' label, while a straight boundary (half the neighbours on each
# side) stays where it is. Bilateral sigma_xy 3 fills most of an 11 x 11
# window (sum 48) and sigma_rgb 13, a common choice with this CRF, counts
# colours within ~20 levels as one surface; weight 0.1 gives up to 4.8 nats
# from a neighbourhood of one colour. Both stay well below a confident
# unary (11.5 nats at the floor), so the network keeps the last word where
# it is sure. On the pose-mask smoke model's 199 validation people they
# raise mask IoU from 0.719 to 0.748 (window 11, 5 iterations); the search
# there (0.799) turns the spatial term off and the colour term up 18
# times, which fits flat-coloured synthetic people but is too strong a
# start for textured real clothes.
DEFAULT = CrfParams(spatial_weight=0.5, spatial_sigma=1.0,
                    bilateral_weight=0.1, bilateral_sigma_xy=3.0,
                    bilateral_sigma_rgb=13.0)


def stack_params(params: Sequence[CrfParams]) -> CrfParams:
  """`params` as one CrfParams of float32 [P] arrays, to vmap over."""
  if not len(params):
    raise ValueError('no params to stack')
  return CrfParams(*(np.asarray([float(getattr(p, f)) for p in params],
                                np.float32) for f in CrfParams._fields))


def window_offsets(window: int) -> np.ndarray:
  """Half of a window's (dy, dx) offsets, int [(window^2 - 1) / 2, 2]: those
  after the centre in row-major order. With their negatives they are every
  neighbour; k is symmetric, so these carry the whole kernel."""
  if window < 3 or window % 2 != 1:
    raise ValueError(f'window must be odd and at least 3, got {window}')
  r = window // 2
  dy, dx = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1),
                       indexing='ij')
  offsets = np.stack([dy.ravel(), dx.ravel()], -1)
  return offsets[window * window // 2 + 1:]


def _shift(x, dy: int, dx: int, r: int):
  """x[i + dy, j + dx] at (i, j) of `x` padded by r zeros on each side of
  its first two axes (sizes H + 2r, W + 2r): zero outside the image."""
  h, w = x.shape[0] - 2 * r, x.shape[1] - 2 * r
  return x[r + dy:r + dy + h, r + dx:r + dx + w]


def _pad(x, r: int):
  return jnp.pad(x, ((r, r), (r, r)) + ((0, 0),) * (x.ndim - 2))


def pair_kernel(image, params: CrfParams, window: int):
  """k(i, i + o) [O, H, W] for the offsets o of `window_offsets`; zero where
  i + o leaves the image."""
  offsets = window_offsets(window)
  r = window // 2
  image = jnp.asarray(image, jnp.float32)
  padded = _pad(image, r)
  inside = _pad(jnp.ones(image.shape[:2], jnp.float32), r)
  # Independent of the params: under vmap over params computed once.
  colour = jnp.stack([jnp.sum(jnp.square(_shift(padded, dy, dx, r) - image),
                              -1) for dy, dx in offsets])
  inside = jnp.stack([_shift(inside, dy, dx, r) for dy, dx in offsets])
  distance = jnp.asarray(np.sum(np.square(offsets), -1), jnp.float32)[
      :, None, None]
  p = params
  spatial = p.spatial_weight * jnp.exp(
      -distance / (2 * jnp.square(p.spatial_sigma)))
  bilateral = p.bilateral_weight * jnp.exp(
      -distance / (2 * jnp.square(p.bilateral_sigma_xy))
      - colour / (2 * jnp.square(p.bilateral_sigma_rgb)))
  return inside * (spatial + bilateral)


def _message(kernel, q, offsets, r: int):
  """sum over j in the window, j != i, of k(i, j) q_j, for q [H, W, ...]."""
  q = _pad(q, r)
  # k(i, i - o) = k(i - o, i): the kernel of offset o read at i - o.
  kernel_padded = jnp.pad(kernel, ((0, 0), (r, r), (r, r)))
  extra = (None,) * (q.ndim - 2)
  total = 0
  for o, (dy, dx) in enumerate(offsets):
    forward = kernel[o][(...,) + extra]
    backward = _shift(kernel_padded[o], -dy, -dx, r)[(...,) + extra]
    total = total + (forward * _shift(q, dy, dx, r) +
                     backward * _shift(q, -dy, -dx, r))
  return total


def mean_field(probs, image, params: CrfParams, *, window: int = 11,
               iterations: int = 5):
  """Mean-field of the module docstring's CRF on one image.

  Args:
    probs: float [H, W, C] class probabilities (the unaries are their
      negative logs, floored at `PROB_FLOOR`).
    image: [H, W, 3] uint8, or float in 0-255 units.
    params: scalars (traced or not).
    window: odd side of the square window of neighbours (static).
    iterations: mean-field updates (static; 0 returns `probs` floored and
      renormalised).

  Returns:
    float32 [H, W, C] marginals Q.
  """
  probs = jnp.asarray(probs, jnp.float32)
  if probs.ndim != 3 or image.shape[:2] != probs.shape[:2]:
    raise ValueError(f'expected probs [H, W, C] and image [H, W, 3] of the '
                     f'same H, W, got {probs.shape} and {image.shape}')
  offsets = window_offsets(window)
  r = window // 2
  log_p = jnp.log(jnp.clip(probs, PROB_FLOOR, 1.0))
  kernel = pair_kernel(image, params, window)

  if probs.shape[-1] == 2:
    # Two labels: Q_0 = 1 - Q_1, so the message to label 0 is the kernel's
    # sum minus that to label 1, and one channel carries the update
    # (half the work of the general case, the same values).
    logit = log_p[..., 1] - log_p[..., 0]
    kernel_sum = _message(kernel, jnp.ones(logit.shape, jnp.float32),
                          offsets, r)

    def update_binary(_, q):
      return jax.nn.sigmoid(logit + 2 * _message(kernel, q, offsets, r)
                            - kernel_sum)

    q = jax.lax.fori_loop(0, iterations, update_binary,
                          jax.nn.sigmoid(logit))
    return jnp.stack([1 - q, q], -1)

  def update(_, q):
    return jax.nn.softmax(log_p + _message(kernel, q, offsets, r), -1)

  return jax.lax.fori_loop(0, iterations, update, jax.nn.softmax(log_p, -1))


def refine(probs_batch, images, params: CrfParams, *, window: int = 11,
           iterations: int = 5):
  """uint8 [B, H, W] labels: the argmax of `mean_field` of each image of
  probs [B, H, W, C] and images [B, H, W, 3]."""

  def one(probs, image):
    q = mean_field(probs, image, params, window=window,
                   iterations=iterations)
    return jnp.argmax(q, -1).astype(jnp.uint8)

  return jax.vmap(one)(probs_batch, images)


def binary_probs(tanh_output):
  """(background, person) probabilities [..., H, W, 2] of the pose-mask
  network's tanh output [..., H, W]: p(person) = (out + 1) / 2."""
  person = jnp.clip((jnp.asarray(tanh_output, jnp.float32) + 1) / 2, 0, 1)
  return jnp.stack([1 - person, person], -1)


def params_to_dict(params: CrfParams) -> dict[str, float]:
  return {f: float(v) for f, v in zip(CrfParams._fields, params)}


def read_search(workdir) -> dict | None:
  """`refine_search`'s result in `workdir` (``refine_search.json``), None
  where there is none.

  Raises:
    errors.ConfigError: the file exists but has no complete 'crf' entry.
  """
  path = storage.join(workdir, SEARCH_FILE)
  if not path.exists():
    return None
  try:
    saved = json.loads(path.read_text())
    CrfParams(**{f: float(saved['crf'][f]) for f in CrfParams._fields})
  except (ValueError, KeyError, TypeError) as e:
    raise errors.ConfigError(
        f'{path}: not a refine_search result with CRF params ({e!r}); '
        'run python -m hpe_jax.evaluation.refine_search again or delete '
        'it') from e
  return saved


def load_params(workdir) -> CrfParams:
  """The params `refine_search` saved in `workdir` (`read_search`), else
  `DEFAULT`."""
  saved = read_search(workdir)
  if saved is None:
    return DEFAULT
  return CrfParams(**{f: float(saved['crf'][f]) for f in CrfParams._fields})
