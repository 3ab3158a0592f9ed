"""Pyramidal Lucas–Kanade point tracking (Bouguet's formulation) as jitted
array code, vmapped over points: a fixed window, a fixed number of levels
and of Gauss–Newton iterations, so the shapes are static.

`track(previous, current, points)` moves points [N, 2] (x, y in pixels) of
grey image `previous` [H, W] to `current`, from the coarsest pyramid level
to the finest. It returns the new points and a status: false where the
window has too little texture to track (the smaller eigenvalue of its
gradient matrix, per window pixel, under `min_eigenvalue`) or the point
left the image. `tests/test_lucas_kanade.py` checks it against OpenCV's
`calcOpticalFlowPyrLK` on known shifts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def _downsample(image: jax.Array) -> jax.Array:
  """Half the size after a [1 4 6 4 1] / 16 blur (as OpenCV's pyrDown)."""
  kernel = jnp.array([1, 4, 6, 4, 1], jnp.float32) / 16
  padded = jnp.pad(image, 2, mode='reflect')
  rows = sum(kernel[i] * padded[i:i + image.shape[0]] for i in range(5))
  both = sum(kernel[i] * rows[:, i:i + image.shape[1]] for i in range(5))
  return both[::2, ::2]


def pyramid(image: jax.Array, levels: int) -> list[jax.Array]:
  out = [jnp.asarray(image, jnp.float32)]
  for _ in range(levels - 1):
    out.append(_downsample(out[-1]))
  return out


def _sample(image: jax.Array, xy: jax.Array) -> jax.Array:
  """Bilinear samples of `image` at points [..., 2] (x, y), the border
  pixel beyond the edges."""
  return jax.scipy.ndimage.map_coordinates(image, [xy[..., 1], xy[..., 0]],
                                           order=1, mode='nearest')


def _gradients(image: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Scharr derivatives (3, 10, 3) / 32, as OpenCV's tracker uses."""
  p = jnp.pad(image, 1, mode='edge')
  smooth = lambda a, b, c: (3 * a + 10 * b + 3 * c) / 32
  gx = smooth(p[:-2, 2:] - p[:-2, :-2], p[1:-1, 2:] - p[1:-1, :-2],
              p[2:, 2:] - p[2:, :-2])
  gy = smooth(p[2:, :-2] - p[:-2, :-2], p[2:, 1:-1] - p[:-2, 1:-1],
              p[2:, 2:] - p[:-2, 2:])
  return gx, gy


@functools.partial(jax.jit, static_argnames=('window', 'levels',
                                             'iterations'))
def track(previous, current, points, *, window: int = 21, levels: int = 3,
          iterations: int = 20, min_eigenvalue: float = 1e-4):
  """Points [N, 2] of `previous` [H, W] found in `current` [H, W].

  Args:
    previous, current: grey images (any real dtype; 0-255 as OpenCV).
    points: [N, 2] x, y in `previous`.
    window: side of the square window, in pixels (odd).
    levels: pyramid levels (1: no pyramid).
    iterations: Gauss–Newton steps per level.
    min_eigenvalue: texture threshold on the window's gradient matrix,
      per window pixel, with intensities scaled to [0, 1].

  Returns:
    (points [N, 2] in `current`, status [N] bool).
  """
  half = window // 2
  offsets = jnp.stack(jnp.meshgrid(jnp.arange(-half, half + 1),
                                   jnp.arange(-half, half + 1)), -1
                      ).reshape(-1, 2).astype(jnp.float32)
  prev_pyr = pyramid(previous, levels)
  next_pyr = pyramid(current, levels)
  points = jnp.asarray(points, jnp.float32)

  def one_level(level, guess):
    """Each point's displacement at `level`, from `guess` [N, 2]."""
    prev, nxt = prev_pyr[level], next_pyr[level]
    gx, gy = _gradients(prev)
    scale = 2.0**level

    def one_point(point, g):
      at = point / scale + offsets  # pyramid pixel j sits on 2j below
      template = _sample(prev, at)
      ix, iy = _sample(gx, at), _sample(gy, at)
      gram = jnp.array([[ix @ ix, ix @ iy], [ix @ iy, iy @ iy]])
      inverse = jnp.linalg.inv(gram + 1e-6 * jnp.eye(2))

      def step(v, _):
        residual = template - _sample(nxt, at + g + v)
        return v + inverse @ jnp.array([ix @ residual, iy @ residual]), None

      v, _ = jax.lax.scan(step, jnp.zeros(2), None, length=iterations)
      # Texture: the smaller eigenvalue per window pixel, in [0, 1] units.
      trace, det = gram[0, 0] + gram[1, 1], jnp.linalg.det(gram)
      smallest = trace / 2 - jnp.sqrt(jnp.maximum(trace**2 / 4 - det, 0))
      return g + v, smallest / offsets.shape[0] / 255.0**2

    return jax.vmap(one_point)(points, guess)

  guess = jnp.zeros_like(points)
  for level in reversed(range(levels)):
    flow, texture = one_level(level, guess)
    guess = flow * 2 if level else flow
  found = points + guess
  h, w = previous.shape
  inside = ((found >= 0) & (found <= jnp.array([w - 1, h - 1]))).all(-1)
  return found, inside & (texture >= min_eigenvalue)
