"""Loads and runs a predictor written by `hpe_jax.export`, with jax and
numpy only (no flax, no model code).

`load(path)` returns an `ExportedPredictor`:

* `run(batch)`: the exported function on a batch of model inputs (uint8
  ``image`` [B, h, w, 3] at the export's input size, float32 ``affine``
  [B, 2, 3] from image pixels to the output grid, and the task's extra
  inputs); any batch size, each new size compiled once (`compile` does it
  ahead of time);
* `prepare` / `finish`: an image (and its person boxes, or poses for the
  pose-conditioned mask model) to input rows and back, so that a server can
  merge the rows of many requests into one `run`;
* `predict(image, boxes=None, poses=None)`: the three together, for one
  image, returning results in image pixels.

Crops are made here with numpy, matching the training pipeline's geometry
(box grown to the input's aspect ratio, times the box padding).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax.ops import affine

FORMAT = 'hpe_jax.export/1'
FUNCTION_FILE = 'predictor.jaxexport'
VARIABLES_FILE = 'variables.npz'
METADATA_FILE = 'metadata.json'
_METADATA_KEYS = ('task', 'rows', 'results', 'input_size', 'output_stride',
                  'box_padding', 'inputs', 'variables')

class ExportError(ValueError):
  """A folder that is not a readable export, or inputs it cannot take."""


def write(path: str, serialized: bytes, leaves, metadata: dict) -> None:
  """The three files of an export (see `hpe_jax.export`)."""
  with open(os.path.join(path, FUNCTION_FILE), 'wb') as f:
    f.write(serialized)
  # npz has no bfloat16: such leaves are stored as their bits.
  arrays = {f'{i:05d}': (np.asarray(x).view(np.uint16)
                         if x.dtype == jnp.bfloat16 else np.asarray(x))
            for i, x in enumerate(leaves)}
  np.savez(os.path.join(path, VARIABLES_FILE), **arrays)
  with open(os.path.join(path, METADATA_FILE), 'w') as f:
    json.dump(metadata, f, indent=1)


def _read_metadata(path: str) -> dict:
  name = os.path.join(path, METADATA_FILE)
  try:
    with open(name) as f:
      meta = json.load(f)
  except FileNotFoundError as e:
    raise ExportError(f'{path}: not an export (no {METADATA_FILE}; make one '
                      'with python -m hpe_jax.export)') from e
  except (OSError, ValueError) as e:
    raise ExportError(f'{name}: unreadable ({e})') from e
  missing = [k for k in _METADATA_KEYS if k not in meta]
  if meta.get('format') != FORMAT or missing:
    raise ExportError(f'{name}: format {meta.get("format")!r}'
                      f'{" without " + ", ".join(missing) if missing else ""}'
                      f', this version reads {FORMAT!r}: export the run '
                      'again')
  return meta


@dataclasses.dataclass
class Rows:
  """The model input rows of one image, and what `finish` needs."""
  batch: dict  # name -> array with a leading row axis
  image_shape: tuple[int, int]
  to_input: np.ndarray  # [N, 2, 3] image -> model input pixels
  scores: np.ndarray  # [N] the given boxes' or poses' scores

  def __len__(self) -> int:
    return len(self.to_input)


class ExportedPredictor:
  """A loaded export (module docstring)."""

  def __init__(self, path: str):
    self.path = path
    self.metadata = _read_metadata(path)
    try:
      with open(os.path.join(path, FUNCTION_FILE), 'rb') as f:
        self.exported = jax.export.deserialize(bytearray(f.read()))
      with np.load(os.path.join(path, VARIABLES_FILE)) as npz:
        leaves = [npz[k] for k in sorted(npz.files)]
    except (OSError, ValueError) as e:
      raise ExportError(f'{path}: damaged export ({e})') from e
    dtypes = self.metadata['variables']['dtypes']
    if len(leaves) != len(dtypes):
      raise ExportError(f'{path}: {len(leaves)} variables, the metadata '
                        f'lists {len(dtypes)}')
    leaves = [x.view(jnp.bfloat16) if d == 'bfloat16' else x
              for x, d in zip(leaves, dtypes)]
    # in_tree is that of ((variables, batch), {}).
    variables_tree = self.exported.in_tree.children()[0].children()[0]
    self.variables = jax.device_put(jax.tree.unflatten(variables_tree,
                                                       leaves))
    self.inputs = self.metadata['inputs']
    self.input_size = tuple(self.metadata['input_size'])
    self.task = self.metadata['task']
    self.rows = self.metadata['rows']  # 'boxes', 'poses' or 'image'
    self.results = self.metadata['results']
    self._call = jax.jit(self.exported.call)

  # The exported function.

  def check_batch(self, batch: dict) -> int:
    """The batch size of `batch`, or an `ExportError` naming the input
    whose shape or dtype differs from the export's."""
    if set(batch) != set(self.inputs):
      raise ExportError(f'inputs {sorted(batch)}: the export takes '
                        f'{sorted(self.inputs)}')
    sizes = set()
    for name, spec in self.inputs.items():
      x = batch[name]
      want = tuple(spec['shape'][1:])
      if (np.ndim(x) != len(spec['shape']) or tuple(np.shape(x)[1:]) != want
          or np.dtype(x.dtype) != np.dtype(spec['dtype'])):
        raise ExportError(
            f'{name}: expected {spec["dtype"]} [batch, '
            f'{", ".join(map(str, want))}], got {np.dtype(x.dtype)} '
            f'{list(np.shape(x))}')
      sizes.add(np.shape(x)[0])
    if len(sizes) != 1:
      raise ExportError(f'inputs of different batch sizes {sorted(sizes)}')
    return sizes.pop()

  def run(self, batch: dict) -> dict:
    """The exported function's outputs (numpy) for a batch of inputs."""
    self.check_batch(batch)
    return jax.device_get(self._call(self.variables, batch))

  def empty_batch(self, size: int) -> dict:
    return {k: np.zeros((size, *v['shape'][1:]), v['dtype'])
            for k, v in self.inputs.items()}

  def compile(self, batch_sizes) -> None:
    """Compiles the function for each of `batch_sizes` now."""
    for size in batch_sizes:
      self.run(self.empty_batch(size))

  @property
  def compilations(self) -> int:
    """Batch shapes compiled so far."""
    return self._call._cache_size()  # pylint: disable=protected-access

  # One image: rows in, results out.

  @property
  def takes_boxes(self) -> bool:
    return self.rows == 'boxes'

  @property
  def takes_poses(self) -> bool:
    return self.rows == 'poses'

  def _affines(self, boxes, padding: float):
    """(image -> input, image -> output grid) [N, 2, 3] of crops."""
    h, w = self.input_size
    if not len(boxes):
      return np.zeros((0, 2, 3)), np.zeros((0, 2, 3))
    to_input = np.stack([
        affine.crop_affine(*affine.box_to_center_size(b, w / h, padding),
                           (w, h)) for b in boxes]).reshape(-1, 2, 3)
    stride = affine.stride_affine(self.metadata['output_stride'])
    return to_input, np.stack([affine.compose(stride, m) for m in to_input]
                              ).reshape(-1, 2, 3)

  def prepare(self, image: np.ndarray, boxes=None, poses=None) -> Rows:
    """The input rows of one RGB uint8 image [H, W, 3].

    `boxes` ([N, 4] x1 y1 x2 y2, optionally a fifth column of scores) are
    the people of a top-down keypoint model (None: the whole image; an
    empty list: nobody);
    `poses` ([N, K, 3] x, y, score in image pixels, in the export's
    skeleton) those of the pose-conditioned mask model.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
      raise ExportError(f'image: expected uint8 [height, width, 3], got '
                        f'{image.dtype} {list(image.shape)}')
    height, width = image.shape[:2]
    if not height or not width:
      raise ExportError(f'image: empty ({height}x{width})')
    whole = np.array([[-0.5, -0.5, width - 0.5, height - 0.5]], np.float32)
    padding = 1.0
    extra = {}
    scores = np.ones(1, np.float32)
    if self.takes_poses:
      if poses is None:
        raise ExportError('this model needs the people\'s poses')
      boxes, scores, keypoints = self._pose_boxes(poses)
      padding = self.metadata['box_padding']
    elif self.takes_boxes and boxes is not None:
      boxes = np.asarray(boxes, np.float32)
      boxes = boxes.reshape(len(boxes), -1 if boxes.size else 4)
      if boxes.shape[1] not in (4, 5):
        raise ExportError(f'boxes: expected [N, 4] or [N, 5], got '
                          f'{list(boxes.shape)}')
      scores = (boxes[:, 4] if boxes.shape[1] == 5 else
                np.ones(len(boxes), np.float32))
      boxes = boxes[:, :4]
      padding = self.metadata['box_padding']
    else:
      boxes = whole
    to_input, to_output = self._affines(boxes, padding)
    if self.takes_poses:
      xy = affine.apply(to_output, keypoints[..., :2])
      extra['keypoints'] = np.where(
          keypoints[..., 2:] > 0, np.concatenate([xy, keypoints[..., 2:]],
                                                 -1), 0).astype(np.float32)
    h, w = self.input_size
    crops = np.stack([warp_image(image, m, (h, w)) for m in to_input]
                     ) if len(to_input) else np.zeros((0, h, w, 3), np.uint8)
    batch = {'image': crops, 'affine': to_output.astype(np.float32), **extra}
    return Rows(batch, (height, width), to_input, scores)

  def _pose_boxes(self, poses):
    """Boxes, scores and keypoints (score -> visibility 2 or 0) of poses."""
    kp = np.asarray(poses, np.float32)
    k = len(self.metadata['skeleton']['joint_names'])
    if kp.ndim != 3 or kp.shape[1:] != (k, 3):
      raise ExportError(f'poses: expected [N, {k}, 3] (x, y, score per '
                        f'joint), got {list(kp.shape)}')
    seen = kp[..., 2] > self.metadata['keypoint_threshold']
    scores = np.where(seen.any(-1), (kp[..., 2] * seen).sum(-1) /
                      np.maximum(seen.sum(-1), 1), 0)
    kp = np.concatenate([kp[..., :2], np.where(seen, 2.0, 0.0)[..., None]],
                        -1)
    keep = seen.any(-1)  # a pose without a joint seen has no box
    seen, kp, scores = seen[keep], kp[keep], scores[keep]
    big = np.float32(np.inf)
    lo = np.where(seen[..., None], kp[..., :2], big).min(1)
    hi = np.where(seen[..., None], kp[..., :2], -big).max(1)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * self.metadata[
        'pose_box_scale']
    boxes = np.concatenate([centre - half, centre + half], -1)
    return boxes, scores.astype(np.float32), kp

  def finish(self, rows: Rows, outputs: dict) -> dict:
    """Results in image pixels of one image's rows and their outputs.

    By the export's ``results``: 'keypoints' (top-down pose models):
    ``people`` (``box`` x1 y1 x2 y2, ``score``, ``keypoints`` [K, 3] x, y,
    score); 'label_map' (U-Net family): ``labels`` [H, W] and ``joints``
    {head: [K, 2]}; 'masks' (pose-conditioned masks): ``people`` with
    ``mask`` and ``labels`` (n for the n-th person); 'people' (detectors
    with part masks): ``people`` with box, score, keypoints and mask,
    ``instances`` and ``parts`` [H, W].
    """
    shape = rows.image_shape
    out = {'image_size': list(shape), 'people': []}
    if not len(rows):  # no boxes, or no pose with a joint seen
      if self.results == 'masks':
        out['labels'] = np.zeros(shape, np.uint8)
      return out
    if self.results == 'keypoints':
      kp = np.concatenate([outputs['keypoints'],
                           outputs['scores'][..., None]], -1)
      for box, score, k in zip(_input_boxes(rows.to_input, self.input_size),
                               rows.scores, kp):
        out['people'].append({'box': box, 'keypoints': k,
                              'score': float(score * k[:, 2].mean())})
    elif self.results == 'label_map':
      out['labels'] = self.labels_to_image(outputs['labels'][0],
                                           rows.to_input[0], shape)
      out['joints'] = {k[:-len('_keypoints')]: v[0]
                       for k, v in outputs.items()
                       if k.endswith('_keypoints')}
    elif self.results == 'masks':
      labels = np.zeros(shape, np.uint8)
      masks = [self.labels_to_image(m, t, shape) > 0
               for m, t in zip(outputs['labels'], rows.to_input)]
      for n in reversed(range(len(masks))):  # the best painted last, on top
        labels[masks[n]] = n + 1
      for n, score in enumerate(rows.scores):
        out['people'].append({'box': _mask_box(labels == n + 1),
                              'score': float(score),
                              'keypoints': _to_image(
                                  rows.batch['keypoints'][n],
                                  rows.batch['affine'][n]),
                              'mask': labels == n + 1})
      out['labels'] = labels
    elif self.results == 'people':
      kept = np.flatnonzero(outputs['scores'][0] >= self.metadata['min_score'])
      instances = self.labels_to_image(outputs['instances'][0],
                                       rows.to_input[0], shape)
      out['parts'] = self.labels_to_image(outputs['parts'][0],
                                          rows.to_input[0], shape)
      out['instances'] = np.zeros(shape, np.uint8)
      for n, d in enumerate(kept):
        mask = instances == d + 1
        out['instances'][mask] = n + 1
        out['people'].append({'box': outputs['image_boxes'][0, d],
                              'score': float(outputs['scores'][0, d]),
                              'keypoints': outputs['keypoints'][0, d],
                              'mask': mask})
    else:
      raise ExportError(f'results {self.results!r} of task {self.task!r}: '
                        'use run(), this loader cannot read them')
    return out

  def labels_to_image(self, labels, to_input, shape) -> np.ndarray:
    """A label map on the input or output grid of a crop, mapped back into
    the image of `shape` (nearest label; 0 outside the crop)."""
    scale = self.input_size[0] / labels.shape[0]
    to_grid = affine.compose(affine.stride_affine(scale), to_input)
    # Crops here are never rotated: x and y map separately.
    h, w = shape[:2]
    ix = np.rint(to_grid[0, 0] * np.arange(w) + to_grid[0, 2]).astype(int)
    iy = np.rint(to_grid[1, 1] * np.arange(h) + to_grid[1, 2]).astype(int)
    inside = (((iy >= 0) & (iy < labels.shape[0]))[:, None] &
              ((ix >= 0) & (ix < labels.shape[1]))[None, :])
    picked = labels[np.ix_(iy.clip(0, labels.shape[0] - 1),
                           ix.clip(0, labels.shape[1] - 1))]
    return np.where(inside, picked, 0).astype(np.uint8)

  def pad_batch(self, batch: dict, size: int) -> dict:
    """`batch` padded with zero rows to `size` rows."""
    n = len(batch['image'])
    return {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]),
                                           v.dtype)]) if size > n else v
            for k, v in batch.items()}

  def predict(self, image: np.ndarray, boxes=None, poses=None) -> dict:
    """`finish` of `run` of `prepare` for one image."""
    rows = self.prepare(image, boxes, poses)
    outputs = self.run(rows.batch) if len(rows) else {}
    return self.finish(rows, outputs)


def _input_boxes(to_input, input_size):
  """[N, 4] the image boxes (x1, y1, x2, y2) the crops cover."""
  h, w = input_size
  corners = np.array([[-0.5, -0.5], [w - 0.5, h - 0.5]])
  out = affine.apply(affine.invert(to_input), corners)
  return np.concatenate([out.min(-2), out.max(-2)], -1).astype(np.float32)


def _to_image(keypoints, to_output):
  """Keypoints on a crop's output grid back to image pixels."""
  xy = affine.apply(affine.invert(to_output), keypoints[:, :2])
  return np.concatenate([xy, keypoints[:, 2:]], -1).astype(np.float32)


def _mask_box(mask) -> np.ndarray:
  ys, xs = np.nonzero(mask)
  if not len(xs):
    return np.zeros(4, np.float32)
  return np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5,
                   ys.max() + 0.5], np.float32)


def warp_image(image: np.ndarray, to_input: np.ndarray, size) -> np.ndarray:
  """Bilinear crop [h, w, 3] of `image` through `to_input` (image -> crop
  pixels), 0 outside the image (as the training pipeline's OpenCV warp)."""
  h, w = size
  inv = affine.invert(np.asarray(to_input, np.float64))
  ys, xs = np.mgrid[0:h, 0:w]
  sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
  sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
  x0, y0 = np.floor(sx), np.floor(sy)
  fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
  # One pixel of zeros around the image; beyond it, indices clip onto it.
  padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
  height, width = image.shape[:2]
  xi = [np.clip(x0 + d, -1, width).astype(np.int64) + 1 for d in (0, 1)]
  yi = [np.clip(y0 + d, -1, height).astype(np.int64) + 1 for d in (0, 1)]
  top = padded[yi[0], xi[0]] * (1 - fx) + padded[yi[0], xi[1]] * fx
  bottom = padded[yi[1], xi[0]] * (1 - fx) + padded[yi[1], xi[1]] * fx
  return np.rint(top * (1 - fy) + bottom * fy).clip(0, 255).astype(np.uint8)


def load(path: str) -> ExportedPredictor:
  """The export in folder `path` (`ExportError` if it is not one)."""
  return ExportedPredictor(path)
