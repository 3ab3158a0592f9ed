"""The pixels of a scene: materials painted, then camera blur and noise.

Surfaces are the background's ids followed by the owner map's (occluders,
then people's segments); one row of texture parameters per surface
(`materials.surface_rows`) is looked up into planes and evaluated for all
pixels at once.
"""

from __future__ import annotations

import functools
import threading

import cv2
import numpy as np

from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import materials
from hpe_jax.data.synthetic import render
from hpe_jax.data.synthetic import scene as scene_lib

# The people's main materials, which the background's distractors copy.
_CLOTHES = [body.PRIMITIVE_INDEX[n]
            for n in ('torso', 'left_lower_arm', 'right_upper_leg')]


class _Workspace:
  """Scratch images reused between samples of one size, one per thread.

  Fresh multi-megabyte temporaries cost more in page faults than the
  arithmetic on them; the buffers never carry anything between samples.
  """

  def __init__(self, h: int, w: int):
    self.planes = np.empty((len(materials.ROW_FIELDS), h, w), np.float32)
    self.tmp = np.empty((3, h, w), np.float32)
    self.fields = np.empty((3, h, w), np.float32)
    self.image = np.empty((h, w, 3), np.float32)
    self.blurred = np.empty((h, w, 3), np.float32)
    self.xs, self.ys = (
        g.astype(np.float32) for g in np.meshgrid(np.arange(w), np.arange(h)))


_THREAD_LOCAL = threading.local()


def _workspace(h: int, w: int) -> _Workspace:
  spaces = getattr(_THREAD_LOCAL, 'spaces', None)
  if spaces is None:
    spaces = _THREAD_LOCAL.spaces = {}
  if (h, w) not in spaces:
    if len(spaces) >= 4:
      spaces.clear()
    spaces[h, w] = _Workspace(h, w)
  return spaces[h, w]


def _noise_fields(rng: np.random.Generator, ws: _Workspace) -> np.ndarray:
  """[3, H, W] smooth noise in [0, 1] at coarse, medium and fine scale."""
  _, h, w = ws.fields.shape
  for i, cell in enumerate((64, 12, 3)):
    small = rng.random((h // cell + 2, w // cell + 2), np.float32)
    cv2.resize(small, (w, h), dst=ws.fields[i],
               interpolation=cv2.INTER_LINEAR)
  return ws.fields


def _paint(surface: np.ndarray, rows: np.ndarray,
           ws: _Workspace) -> np.ndarray:
  """Float RGB image [H, W, 3] (in `ws`) of surface ids and their rows."""
  table = np.zeros((len(materials.ROW_FIELDS), max(256, len(rows))),
                   np.float32)
  table[:, :len(rows)] = rows.T
  p = dict(zip(materials.ROW_FIELDS, ws.planes))
  if len(rows) <= 256:
    # cv2.LUT is several times faster than numpy indexing.
    ids = surface.astype(np.uint8)
    for i, plane in enumerate(ws.planes):
      cv2.LUT(ids, table[i], dst=plane)
  else:
    for i, plane in enumerate(ws.planes):
      np.take(table[i], surface, out=plane)
  xs, ys = ws.xs, ws.ys
  a, b, t = ws.tmp

  def plane(name: str, out: np.ndarray) -> np.ndarray:
    # out = px * x + py * y + p0 for the row plane `name`.
    np.multiply(xs, p[name[0] + 'x'], out=out)
    np.multiply(ys, p[name[0] + 'y'], out=b)
    out += b
    out += p[name[0] + '0']
    return out

  stripe = np.sin(plane('s', a), out=a)
  stripe *= p['sharp']
  stripe += 0.5
  np.clip(stripe, 0, 1, out=stripe)
  np.multiply(stripe, p['ws'], out=t)
  grad = np.clip(plane('g', a), 0, 1, out=a)
  grad *= p['wg']
  t += grad
  for i in range(3):
    t += np.multiply(p[f'w{i}'], ws.fields[i], out=a)
  shade = plane('h', a)
  shade *= shade
  np.minimum(shade, 1, out=shade)
  shade *= p['shade']
  np.subtract(1, shade, out=shade)
  for c in 'rgb':
    # Channel c: (c1 + (c2 - c1) t) shade, left in the c2 plane.
    c1, c2 = p[f'{c}1'], p[f'{c}2']
    c2 -= c1
    c2 *= t
    c2 += c1
    c2 *= shade
  return cv2.merge([p['r2'], p['g2'], p['b2']], dst=ws.image)


@functools.lru_cache(maxsize=1)
def _sensor_noise_tile() -> np.ndarray:
  """Fixed pixel noise; random crops of it are cheaper than fresh noise."""
  return np.random.default_rng(12345).normal(0, 1, (512, 512, 3)).astype(
      np.float32)


def render_pixels(rng: np.random.Generator, scene: render.Scene,
                  cfg: scene_lib.Config) -> np.ndarray:
  """The RGB image of a scene."""
  h, w = cfg.image_hw
  n = len(scene.heights)
  ws = _workspace(h, w)
  _noise_fields(rng, ws)

  num_ids = render.FIRST_PERSON_ID + n * body.NUM_PRIMITIVES
  mats = np.zeros((num_ids, len(materials.MATERIAL_FIELDS)))
  frames = np.zeros((num_ids, 5))
  outlined = np.zeros(num_ids, bool)
  for p in range(n):
    base = render.FIRST_PERSON_ID + p * body.NUM_PRIMITIVES
    mats[base:base + body.NUM_PRIMITIVES], outlined[
        base:base + body.NUM_PRIMITIVES] = materials.person_materials(
            rng, float(scene.heights[p]), cfg.uniform_colour_prob)
  frames[render.FIRST_PERSON_ID:] = scene.frames.reshape(-1, 5)
  for i in range(scene.num_occluders):
    mats[1 + i] = materials.random_material(rng, 0.3 * min(h, w))
    frames[1 + i] = (w / 2, h / 2, 1.0, 0.0, 0.0)
  clothes = mats[render.FIRST_PERSON_ID:].reshape(
      n, body.NUM_PRIMITIVES, mats.shape[1])[:, _CLOTHES].reshape(
          -1, mats.shape[1])
  mean_height = float(scene.heights.mean()) if n else 0.5 * h
  bg, bg_rows = scene_lib.background(rng, cfg.image_hw, clothes,
                                     mean_height, cfg.max_clutter)
  rows = np.concatenate([bg_rows, materials.surface_rows(mats, frames)])
  # Camera white balance: the image is linear in the colours.
  rows[:, materials.ROW_FIELDS.index('r1'):] *= np.tile(
      rng.uniform(0.85, 1.15, 3), 2)
  surface = np.where(scene.owner > 0, scene.owner + np.uint16(len(bg_rows)),
                     bg)
  image = _paint(surface, rows, ws)

  if outlined.any():
    o = scene.owner
    edge = np.zeros(o.shape, bool)
    dx = o[:, 1:] != o[:, :-1]
    dy = o[1:] != o[:-1]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:] |= dy
    edge[:-1] |= dy
    image[edge & outlined[o]] *= 0.4

  # Camera blur and sensor noise.
  if rng.random() < 0.6:
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.1),
                             dst=ws.blurred)
  tile = _sensor_noise_tile()
  reps = (-(-h // tile.shape[0]), -(-w // tile.shape[1]), 1)
  if reps != (1, 1, 1):
    tile = np.tile(tile, reps)
  y0 = rng.integers(tile.shape[0] - h + 1)
  x0 = rng.integers(tile.shape[1] - w + 1)
  cv2.scaleAdd(tile[y0:y0 + h, x0:x0 + w], rng.uniform(0, 8), image,
               dst=image)
  image += 0.5  # rounds in the conversion below
  np.clip(image, 0, 255, out=image)
  return image.astype(np.uint8)
