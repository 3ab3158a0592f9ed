"""Drawing skeletons, masks, part maps and heatmaps over images (uint8 RGB).

Used by the batch preview, the predict command and TensorBoard images.
Limbs and joints are coloured by the person's side (`SIDE_COLORS`, as in
mmpose): left blue, right orange, centre green. Joints labelled as hidden
(visibility 1) are hollow circles; predicted joints scoring at or below the
keypoint threshold are drawn faintly (thin, hollow, see-through) where the
caller asks for it. Label maps get colours from `label_palette` or a part
schema's own, and `add_legend` names them under the picture.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from hpe_jax import errors
from hpe_jax.data import skeletons

# RGB by `Skeleton.side`: -1 left, 0 centre, +1 right.
SIDE_COLORS = {-1: (60, 120, 255), 0: (60, 220, 60), 1: (255, 140, 30)}
# Opacity of the faint drawing of joints below the threshold.
_FAINT_ALPHA = 0.4
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.35


def label_palette(num: int = 256) -> np.ndarray:
  """[num, 3] uint8 distinct colours; 0 black, 255 grey (unknown)."""
  # Golden-ratio hue steps keep neighbouring labels far apart in colour.
  hues = (np.arange(num) * 0.618034 % 1.0 * 180).astype(np.uint8)
  hsv = np.stack([hues, np.full(num, 200, np.uint8),
                  np.full(num, 255, np.uint8)], -1)[None]
  rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]
  rgb[0] = 0
  if num > 255:
    rgb[255] = 128
  return rgb


def _palette(colors=None) -> np.ndarray:
  """[256, 3] uint8: `colors` (a part schema's, or None) for the first
  labels, `label_palette` for the rest."""
  palette = label_palette()
  if colors is not None:
    palette[:len(colors)] = colors
  return palette


def _resize_nearest(labels: np.ndarray, shape) -> np.ndarray:
  return cv2.resize(labels, (shape[1], shape[0]),
                    interpolation=cv2.INTER_NEAREST)


def overlay_labels(image: np.ndarray, labels: np.ndarray,
                   alpha: float = 0.5, colors=None) -> np.ndarray:
  """Blends colour-coded labels (any resolution) over the image; `colors`:
  RGB per label from 0 (a part schema's `colors`), else `label_palette`."""
  labels = _resize_nearest(labels.astype(np.uint8), image.shape)
  colors = _palette(colors)[labels]
  blend = np.where(labels[..., None] > 0,
                   (1 - alpha) * image + alpha * colors, image)
  return blend.astype(np.uint8)


def overlay_heatmaps(image: np.ndarray, heatmaps: np.ndarray,
                     alpha: float = 0.6) -> np.ndarray:
  """Blends the per-pixel maximum of [h, w, K] heatmaps over the image."""
  peak = np.clip(np.asarray(heatmaps, np.float32).max(-1), 0, 1)
  peak = cv2.resize(peak, (image.shape[1], image.shape[0]),
                    interpolation=cv2.INTER_LINEAR)
  colors = cv2.applyColorMap((peak * 255).astype(np.uint8), cv2.COLORMAP_JET)
  colors = cv2.cvtColor(colors, cv2.COLOR_BGR2RGB)
  weight = alpha * peak[..., None]
  return ((1 - weight) * image + weight * colors).astype(np.uint8)


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray,
                  skeleton: skeletons.Skeleton, threshold: float = 0.0,
                  faint: bool = False, radius: int | None = None,
                  thickness: int | None = None) -> np.ndarray:
  """Draws people [P, K, 3] or one person [K, 3] (x, y, visibility/score).

  Limbs and joints are coloured by side (`SIDE_COLORS`). Joints whose third
  value is <= `threshold` are left out or, with `faint` (predicted joints,
  whose third value is a score), drawn faintly: hollow, thin and
  see-through, as are limbs with such a joint at either end. A low score is
  then still visible where the model put the joint.
  """
  out = np.ascontiguousarray(image.copy())
  kp = np.asarray(keypoints, np.float32).reshape(-1, skeleton.num_joints, 3)
  scale = max(out.shape[:2]) / 256
  radius = radius or max(1, round(2.5 * scale))
  thickness = thickness or max(1, round(1.5 * scale))
  side = skeleton.side

  def color(joint):
    return SIDE_COLORS[int(side[joint])]

  def draw(canvas, strong: bool):
    """Paints the limbs and joints above the threshold (`strong`) or the
    others, thin and hollow."""
    for person in kp:
      above = person[:, 2] > threshold
      # cv2 draws with 4 fractional bits: sub-pixel accurate positions.
      pts = [tuple(xy) for xy in np.round(person[:, :2] * 16).astype(int)]
      for a, b in skeleton.limb_indices:
        if bool(above[a] and above[b]) == strong:
          cv2.line(canvas, pts[a], pts[b], color(a if side[a] else b),
                   thickness if strong else 1, cv2.LINE_AA, shift=4)
      for j in np.flatnonzero(above == strong):
        hollow = not strong or person[j, 2] == 1
        cv2.circle(canvas, pts[j], radius * 16, color(j), 1 if hollow else -1,
                   cv2.LINE_AA, shift=4)
    return canvas

  if faint:
    # Drawn on a copy and blended: see-through over the image, and under
    # the joints above the threshold.
    out = cv2.addWeighted(draw(out.copy(), strong=False), _FAINT_ALPHA, out,
                          1 - _FAINT_ALPHA, 0)
  return draw(out, strong=True)


def person_colors(num: int) -> np.ndarray:
  """[num, 3] uint8: the colour of the n-th person (`label_palette` order)."""
  colors = label_palette()[1:255]
  return colors[np.arange(num) % len(colors)]


def draw_people(image: np.ndarray, instances: np.ndarray, parts: np.ndarray,
                people, keypoints, skeleton: skeletons.Skeleton,
                threshold: float = 0.0, alpha: float = 0.6) -> np.ndarray:
  """Every person's body parts in that person's own colour, and skeleton.

  Args:
    image: [H, W, 3] uint8.
    instances: [h, w] 0 nobody, d + 1 for detection d (any resolution; it
      is resized to the image).
    parts: [h, w] part labels (0 background, 1..P), same grid.
    people: the detection indices d to draw, best first; the n-th gets
      colour n.
    keypoints: [len(people), K, 3] in image pixels, with scores.
    skeleton: the keypoints' skeleton.
    threshold: joints scoring at or below it are drawn faintly.
    alpha: opacity of the part colours.

  Parts are shades of the person's colour, from light (label 1) to dark,
  so both who and which part a pixel is can be read; skeletons are coloured
  by side (`draw_skeleton`).
  """
  instances = _resize_nearest(instances.astype(np.uint8), image.shape)
  parts = _resize_nearest(parts.astype(np.uint8), image.shape)
  colors = person_colors(len(people)).astype(np.float32)
  shade = 1.25 - 0.5 * np.clip(parts, 1, None) / max(int(parts.max()), 1)
  out = image.astype(np.float32)
  for n, d in enumerate(people):
    on = instances == d + 1
    paint = np.clip(colors[n] * shade[..., None], 0, 255)
    out[on] = (1 - alpha) * out[on] + alpha * paint[on]
  if len(people):
    return draw_skeleton(out.astype(np.uint8), keypoints, skeleton,
                         threshold=threshold, faint=True)
  return out.astype(np.uint8)


def put_text(image: np.ndarray, text: str) -> np.ndarray:
  out = np.ascontiguousarray(image.copy())
  cv2.putText(out, text, (3, 12), _FONT, _FONT_SCALE, (255, 255, 255), 1,
              cv2.LINE_AA)
  return out


def add_legend(image: np.ndarray, labels: np.ndarray, names,
               colors=None) -> np.ndarray:
  """`image` above a black strip naming the labels present in `labels`.

  Each label other than 0 (background) that occurs in `labels` gets a
  swatch of its `overlay_labels` colour (`colors` as there) and its name
  from `names` (a part schema's `label_names`; 255 is "ignored"), in label
  order, wrapped into rows of the image's width. Only present labels are
  named, so schemas of many classes stay readable; without any the image
  is returned as it is.
  """
  present = [int(v) for v in np.unique(labels) if v != 0]
  if not present:
    return image
  palette = _palette(colors)
  width = image.shape[1]
  row, swatch = 12, 8
  entries, x, y = [], 0, 0
  for label in present:
    name = (names[label] if label < len(names) else
            'ignored' if label == skeletons.IGNORE_LABEL else str(label))
    size = swatch + 4 + cv2.getTextSize(name, _FONT, _FONT_SCALE, 1)[0][0] + 8
    if x and x + size > width:
      x, y = 0, y + row
    entries.append((x, y, palette[label], name))
    x += size
  strip = np.zeros((y + row + 2, width, 3), np.uint8)
  for x, y, color, name in entries:
    cv2.rectangle(strip, (x + 3, y + 3), (x + 2 + swatch, y + 2 + swatch),
                  tuple(map(int, color)), -1)
    cv2.putText(strip, name, (x + swatch + 6, y + 10), _FONT, _FONT_SCALE,
                (255, 255, 255), 1, cv2.LINE_AA)
  return np.concatenate([image, strip])


def grid(images, columns: int, pad: int = 2) -> np.ndarray:
  """Tiles equally sized images into rows of `columns`."""
  images = list(images)
  h, w = images[0].shape[:2]
  rows = -(-len(images) // columns)
  out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255,
                np.uint8)
  for i, im in enumerate(images):
    r, c = divmod(i, columns)
    y, x = pad + r * (h + pad), pad + c * (w + pad)
    out[y:y + h, x:x + w] = im
  return out


def save_png(path: str, image: np.ndarray) -> None:
  """Writes an RGB image, creating its folder."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
    raise errors.ReportableError(f'{path}: could not write the image')
