"""The owner map of a scene and the ground truth read off it.

People and occluders are rasterised into one map of which surface is
front-most at each pixel; masks, the part map, boxes and keypoint visibility
all come from that map, so they agree with the pixels exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import cv2
import numpy as np

from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import shapes

# Owner-map ids: 0 background, then occluding objects, then people.
MAX_OCCLUDERS = 3
FIRST_PERSON_ID = 1 + MAX_OCCLUDERS


@dataclasses.dataclass
class Scene:
  """The geometry of one sample: everything except the pixel colours.

  Attributes:
    owner: uint16 [H, W] front-most surface per pixel: 0 background,
      1..MAX_OCCLUDERS occluding objects, then people's primitives.
    owner_person: int32 lookup, owner id -> person index (-1 none).
    owner_primitive: int32 lookup, owner id -> index into `body.PRIMITIVES`
      (-1 none).
    turned_away: bool [P, 17], joints hidden by the person's own volume.
    annotation: the `Example` annotation keys.
    person_masks: uint8 [P, H, W].
    part_map: uint8 [H, W].
    frames: float [P, NUM_PRIMITIVES, 5] texture frames (see `body.Person`).
    heights: float [P] standing heights in pixels.
    num_occluders: occluders drawn (owner ids 1..num_occluders).
  """
  owner: np.ndarray
  owner_person: np.ndarray
  owner_primitive: np.ndarray
  turned_away: np.ndarray
  annotation: dict[str, Any]
  person_masks: np.ndarray
  part_map: np.ndarray
  frames: np.ndarray
  heights: np.ndarray
  num_occluders: int


def rasterise(image_hw: tuple[int, int], people: Sequence[body.Person],
              occluders: Sequence[np.ndarray]) -> np.ndarray:
  owner = np.zeros(image_hw, np.uint16)
  for p, person in enumerate(people):
    base = FIRST_PERSON_ID + p * body.NUM_PRIMITIVES
    for k, poly in person.polygons:
      cv2.fillPoly(owner, [poly], base + k, cv2.LINE_8, shapes.SHIFT)
  for i, poly in enumerate(occluders):
    cv2.fillPoly(owner, [poly], 1 + i, cv2.LINE_8, shapes.SHIFT)
  return owner


def _owner_luts(num_people: int) -> tuple[np.ndarray, np.ndarray]:
  n = FIRST_PERSON_ID + num_people * body.NUM_PRIMITIVES
  person = np.full(n, -1, np.int32)
  primitive = np.full(n, -1, np.int32)
  person[FIRST_PERSON_ID:] = np.repeat(np.arange(num_people),
                                       body.NUM_PRIMITIVES)
  primitive[FIRST_PERSON_ID:] = np.tile(np.arange(body.NUM_PRIMITIVES),
                                        num_people)
  return person, primitive


def _lookup(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """table[ids]; through cv2.LUT, several times faster, when ids fit a byte."""
  if len(table) > 256:
    return table[ids]
  padded = np.zeros(256, table.dtype)
  padded[:len(table)] = table
  return cv2.LUT(ids.astype(np.uint8), padded)


def _mask_boxes(masks: np.ndarray) -> np.ndarray:
  """Same as `example.boxes_from_masks`, from row and column projections."""
  boxes = np.zeros((len(masks), 4), np.float32)
  rows, cols = masks.any(2), masks.any(1)
  for p in range(len(masks)):
    ys, xs = np.flatnonzero(rows[p]), np.flatnonzero(cols[p])
    if len(xs):
      boxes[p] = xs[0], ys[0], xs[-1] + 1, ys[-1] + 1
  return boxes


def finish_scene(owner: np.ndarray, people: Sequence[body.Person],
                 num_occluders: int) -> Scene:
  """Reads masks, part map, boxes and visibility off the owner map."""
  h, w = owner.shape
  n = len(people)
  person_of, primitive_of = _owner_luts(n)
  part_of = np.zeros(len(person_of), np.uint8)
  part_of[FIRST_PERSON_ID:] = np.tile(body.PRIMITIVE_PART, n)
  masks = np.empty((n, h, w), np.uint8)
  for p in range(n):
    masks[p] = _lookup((person_of == p).astype(np.uint8), owner)
  part_map = _lookup(part_of, owner)

  xy = np.array([p.keypoints for p in people], float).reshape(n, 17, 2)
  turned_away = np.array([p.turned_away for p in people], bool).reshape(n, 17)
  ij = np.floor(xy + 0.5).astype(np.int64)
  inside = ((ij >= 0) & (ij < [w, h])).all(-1)
  at = owner[np.clip(ij[..., 1], 0, h - 1), np.clip(ij[..., 0], 0, w - 1)]
  own = ((person_of[at] == np.arange(n)[:, None]) &
         (primitive_of[at] >= 0) &
         body.JOINT_OWNERS[np.arange(17), primitive_of[at]])
  v = np.where(inside, np.where(own & ~turned_away, 2, 1), 0)
  keypoints = np.concatenate(
      [np.where(inside[..., None], xy, 0), v[..., None]], -1)

  head_boxes = np.array([p.head_box for p in people], float).reshape(n, 4)
  off = ((head_boxes[:, 2] <= 0) | (head_boxes[:, 0] >= w) |
         (head_boxes[:, 3] <= 0) | (head_boxes[:, 1] >= h))
  head_boxes[off] = np.nan
  annotation = dict(
      keypoints=keypoints.astype(np.float32),
      boxes=_mask_boxes(masks),
      head_boxes=head_boxes.astype(np.float32),
      is_crowd=np.zeros(n, bool))
  return Scene(
      owner=owner, owner_person=person_of, owner_primitive=primitive_of,
      turned_away=turned_away, annotation=annotation, person_masks=masks,
      part_map=part_map,
      frames=np.array([p.frames for p in people], float).reshape(
          n, body.NUM_PRIMITIVES, 5),
      heights=np.array([p.height for p in people], float),
      num_occluders=num_occluders)
