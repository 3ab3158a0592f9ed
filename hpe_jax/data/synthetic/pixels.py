"""The pixels of a scene: materials painted, then camera blur and noise.

Surfaces are the background's ids followed by the owner map's (occluders,
then people's segments); one row of texture parameters per surface
(`materials.surface_rows`) is looked up into planes and evaluated for all
pixels at once.

`render_pixels` makes a still image in three steps that a video reuses:
`draw_appearance` (materials, background, noise fields; once per video),
`paint` (an owner map in those materials; once per frame, with textures
that follow their surfaces) and `camera_effects` (blur and sensor noise).
"""

from __future__ import annotations

import dataclasses
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


class Workspace:
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
    # Noise-field maps, only for moving textures (`paint`'s noise_frames).
    self.maps: np.ndarray | None = None


_THREAD_LOCAL = threading.local()


def workspace(h: int, w: int) -> Workspace:
  """The calling thread's scratch images of size h x w."""
  spaces = getattr(_THREAD_LOCAL, 'spaces', None)
  if spaces is None:
    spaces = _THREAD_LOCAL.spaces = {}
  if (h, w) not in spaces:
    if len(spaces) >= 4:
      spaces.clear()
    spaces[h, w] = Workspace(h, w)
  return spaces[h, w]


def _noise_fields(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
  """`out`, [3, H, W]: smooth noise in [0, 1] at coarse, medium and fine
  scale."""
  _, h, w = out.shape
  for i, cell in enumerate((64, 12, 3)):
    small = rng.random((h // cell + 2, w // cell + 2), np.float32)
    cv2.resize(small, (w, h), dst=out[i], interpolation=cv2.INTER_LINEAR)
  return out


def _look_up(table: np.ndarray, surface: np.ndarray, planes) -> None:
  """planes[i] = table[i][surface], for each row i of `table`."""
  if table.shape[1] <= 256:
    # cv2.LUT is several times faster than numpy indexing.
    ids = surface.astype(np.uint8)
    for i, plane in enumerate(planes):
      cv2.LUT(ids, table[i], dst=plane)
  else:
    for i, plane in enumerate(planes):
      np.take(table[i], surface, out=plane)


def _paint(surface: np.ndarray, rows: np.ndarray, ws: Workspace,
           fields: np.ndarray) -> np.ndarray:
  """Float RGB image [H, W, 3] (in `ws`) of surface ids, their rows and the
  noise fields."""
  table = np.zeros((len(materials.ROW_FIELDS), max(256, len(rows))),
                   np.float32)
  table[:, :len(rows)] = rows.T
  p = dict(zip(materials.ROW_FIELDS, ws.planes))
  _look_up(table, surface, ws.planes)
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
    t += np.multiply(p[f'w{i}'], fields[i], out=a)
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


@dataclasses.dataclass
class Appearance:
  """The colours of a scene's surfaces, drawn once and painted any number of
  times (a still image once, a video's world in every frame).

  Attributes:
    fields: float32 [3, H, W] noise fields (coarse, medium, fine).
    materials: [num owner ids, len(MATERIAL_FIELDS)] per owner-map id:
      occluders and people's primitives (row 0, the background, is unused).
    outlined: bool [num owner ids], surfaces whose edges are darkened.
    background: uint8 [H, W] background surface ids.
    background_rows: float32 [B, len(ROW_FIELDS)] their rows.
    white_balance: [3] the camera's colour gains.
  """
  fields: np.ndarray
  materials: np.ndarray
  outlined: np.ndarray
  background: np.ndarray
  background_rows: np.ndarray
  white_balance: np.ndarray


def draw_appearance(rng: np.random.Generator, heights: np.ndarray,
                    num_occluders: int, cfg: scene_lib.Config,
                    fields: np.ndarray) -> Appearance:
  """Materials of people (standing `heights` in pixels, in owner-map order)
  and occluders, the background and the noise fields (drawn into
  `fields`, float32 [3, H, W])."""
  h, w = cfg.image_hw
  n = len(heights)
  _noise_fields(rng, fields)
  num_ids = render.FIRST_PERSON_ID + n * body.NUM_PRIMITIVES
  mats = np.zeros((num_ids, len(materials.MATERIAL_FIELDS)))
  outlined = np.zeros(num_ids, bool)
  for p in range(n):
    base = render.FIRST_PERSON_ID + p * body.NUM_PRIMITIVES
    mats[base:base + body.NUM_PRIMITIVES], outlined[
        base:base + body.NUM_PRIMITIVES] = materials.person_materials(
            rng, float(heights[p]), cfg.uniform_colour_prob)
  for i in range(num_occluders):
    mats[1 + i] = materials.random_material(rng, 0.3 * min(h, w))
  clothes = mats[render.FIRST_PERSON_ID:].reshape(
      n, body.NUM_PRIMITIVES, mats.shape[1])[:, _CLOTHES].reshape(
          -1, mats.shape[1])
  mean_height = float(np.mean(heights)) if n else 0.5 * h
  bg, bg_rows = scene_lib.background(rng, cfg.image_hw, clothes,
                                     mean_height, cfg.max_clutter)
  # Camera white balance: the image is linear in the colours.
  white_balance = rng.uniform(0.85, 1.15, 3)
  return Appearance(fields=fields, materials=mats, outlined=outlined,
                    background=bg, background_rows=bg_rows,
                    white_balance=white_balance)


def _moved_fields(surface: np.ndarray, num_bg: int, noise_frames: np.ndarray,
                  fields: np.ndarray, ws: Workspace) -> np.ndarray:
  """The noise fields seen through each surface's own affine map (in `ws`)."""
  table = np.zeros((6, max(256, num_bg + len(noise_frames))), np.float32)
  # The background's noise stays where it is.
  table[[0, 4], :num_bg] = 1.0
  table[:, num_bg:num_bg + len(noise_frames)] = noise_frames.reshape(
      -1, 6).T
  if ws.maps is None:
    ws.maps = np.empty((6,) + surface.shape, np.float32)
  _look_up(table, surface, ws.maps)
  ax, ay, a0, bx, by, b0 = ws.maps
  map_x = ax * ws.xs + ay * ws.ys + a0
  map_y = bx * ws.xs + by * ws.ys + b0
  for i, field in enumerate(fields):
    cv2.remap(field, map_x, map_y, cv2.INTER_LINEAR, dst=ws.fields[i],
              borderMode=cv2.BORDER_REFLECT_101)
  return ws.fields


def paint(appearance: Appearance, owner: np.ndarray, frames: np.ndarray,
          ws: Workspace, noise_frames: np.ndarray | None = None
          ) -> np.ndarray:
  """Float RGB image [H, W, 3] (in `ws`) of an owner map in `appearance`.

  Args:
    appearance: the surfaces' materials.
    owner: uint16 [H, W] owner map (`render.rasterise`).
    frames: [num owner ids, 5] texture frames (see `body.Person`).
    ws: scratch images of the owner map's size.
    noise_frames: None, or [num owner ids, 2, 3] affine maps from image
      pixels to noise-field coordinates per owner id, so that noise
      textures move with their surfaces (the background's stay put).
  """
  bg_rows = appearance.background_rows
  rows = np.concatenate([bg_rows, materials.surface_rows(
      appearance.materials, frames)])
  rows[:, materials.ROW_FIELDS.index('r1'):] *= np.tile(
      appearance.white_balance, 2)
  surface = np.where(owner > 0, owner + np.uint16(len(bg_rows)),
                     appearance.background)
  fields = appearance.fields
  if noise_frames is not None:
    fields = _moved_fields(surface, len(bg_rows), noise_frames, fields, ws)
  image = _paint(surface, rows, ws, fields)

  outlined = appearance.outlined
  if outlined.any():
    o = owner
    edge = np.zeros(o.shape, bool)
    dx = o[:, 1:] != o[:, :-1]
    dy = o[1:] != o[:-1]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:] |= dy
    edge[:-1] |= dy
    image[edge & outlined[o]] *= 0.4
  return image


def camera_effects(rng: np.random.Generator, image: np.ndarray,
                   ws: Workspace, blur: float | None = None,
                   noise: float | None = None) -> np.ndarray:
  """uint8 RGB of a float image [H, W, 3] after camera blur and sensor noise.

  `blur` (Gaussian sigma, 0 for none) and `noise` (standard deviation) are
  drawn from `rng` when None; the noise pattern always is. `image` is
  overwritten.
  """
  h, w = image.shape[:2]
  if blur is None:
    blur = rng.uniform(0.4, 1.1) if rng.random() < 0.6 else 0.0
  if blur > 0:
    image = cv2.GaussianBlur(image, (0, 0), blur, dst=ws.blurred)
  tile = _sensor_noise_tile()
  reps = (-(-h // tile.shape[0]), -(-w // tile.shape[1]), 1)
  if reps != (1, 1, 1):
    tile = np.tile(tile, reps)
  y0 = rng.integers(tile.shape[0] - h + 1)
  x0 = rng.integers(tile.shape[1] - w + 1)
  if noise is None:
    noise = rng.uniform(0, 8)
  cv2.scaleAdd(tile[y0:y0 + h, x0:x0 + w], noise, image, dst=image)
  image += 0.5  # rounds in the conversion below
  np.clip(image, 0, 255, out=image)
  return image.astype(np.uint8)


def owner_frames(scene: render.Scene) -> np.ndarray:
  """[num owner ids, 5] texture frames of a still scene's surfaces."""
  h, w = scene.owner.shape
  n = len(scene.heights)
  frames = np.zeros((render.FIRST_PERSON_ID + n * body.NUM_PRIMITIVES, 5))
  frames[render.FIRST_PERSON_ID:] = scene.frames.reshape(-1, 5)
  frames[1:1 + scene.num_occluders] = (w / 2, h / 2, 1.0, 0.0, 0.0)
  return frames


def render_pixels(rng: np.random.Generator, scene: render.Scene,
                  cfg: scene_lib.Config) -> np.ndarray:
  """The RGB image of a scene."""
  h, w = cfg.image_hw
  ws = workspace(h, w)
  appearance = draw_appearance(rng, scene.heights, scene.num_occluders, cfg,
                               ws.fields)
  image = paint(appearance, scene.owner, owner_frames(scene), ws)
  return camera_effects(rng, image, ws)
