"""What the server sends: an exported predictor's results as JSON in COCO
result conventions, and drawn over the image.

JSON (`to_json`): ``image_size`` [h, w]; ``people``, COCO results
(``bbox`` x, y, w, h; ``score``; ``keypoints`` x, y, score per joint;
``segmentation`` as compressed RLE where the model gives masks);
``label_maps`` ({name: {``png``: base64 PNG of the labels at the image's
size, ``names``: class names}}) for segmentation and part models;
``joints`` ({head: [[x, y], ...]}) for U-Net joint heads. The stream sends,
instead of ``label_maps``, ``overlay``: a base64 RGBA PNG of the label map
in its class colours, which the camera page lays over the frame.
"""

from __future__ import annotations

import base64

import cv2
import numpy as np

from hpe_jax import visualization
from hpe_jax.data import coco
from hpe_jax.data import skeletons


def skeleton_of(metadata: dict) -> skeletons.Skeleton | None:
  """The export's skeleton, for drawing."""
  fields = metadata.get('skeleton')
  if not fields:
    return None
  return skeletons.Skeleton(**{
      k: (tuple(tuple(x) if isinstance(x, list) else x for x in v)
          if isinstance(v, list) else v) for k, v in fields.items()})


def label_names(metadata: dict, name: str) -> list[str]:
  """Class names of label map `name` of the export's results."""
  if name == 'instances':
    return ['nobody', 'person 1, 2, ...']
  schema = metadata.get('part_schema')
  if schema:
    return schema['label_names']
  return ['background', 'person']


def _label_colors(metadata: dict):
  schema = metadata.get('part_schema')
  return None if not schema else np.asarray(schema['colors'], np.uint8)


def _shown_labels(result: dict) -> tuple[str, np.ndarray] | None:
  """The label map drawn: parts before instances before labels."""
  for name in ('parts', 'labels', 'instances'):
    if name in result:
      return name, result[name]
  return None


def _png(array: np.ndarray) -> str:
  ok, data = cv2.imencode('.png', array)
  if not ok:
    raise ValueError('could not encode a PNG')
  return base64.b64encode(data.tobytes()).decode('ascii')


def overlay_png(result: dict, metadata: dict) -> str | None:
  """Base64 RGBA PNG of the shown label map (0 transparent)."""
  shown = _shown_labels(result)
  if shown is None:
    return None
  name, labels = shown
  colors = (_label_colors(metadata) if name != 'instances' else None)
  palette = (visualization.label_palette() if colors is None else
             np.concatenate([colors, np.zeros((256 - len(colors), 3),
                                              np.uint8)]))
  rgba = np.concatenate([palette[labels],
                         np.where(labels > 0, 140, 0).astype(np.uint8)[
                             ..., None]], -1)
  return _png(cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))


def to_json(result: dict, metadata: dict, *, overlay: bool = False) -> dict:
  """The JSON of one image's results (module docstring); with `overlay`
  (the stream's form) the shown label map as ``overlay`` instead of
  ``label_maps``, which would send it twice."""
  people = result['people']
  out = {'image_size': result['image_size'], 'people': []}
  if people:
    masks = ([p['mask'] for p in people] if 'mask' in people[0] else None)
    records = coco.instance_results(
        [0] * len(people), [p['box'] for p in people],
        [p['score'] for p in people], masks=masks,
        keypoints=[p['keypoints'] for p in people])
    for r in records:
      del r['image_id']
    out['people'] = records
  if result.get('joints'):
    out['joints'] = {h: np.asarray(xy).tolist()
                     for h, xy in result['joints'].items()}
  if overlay:
    png = overlay_png(result, metadata)
    if png is not None:
      out['overlay'] = png
    return out
  maps = {name: {'png': _png(result[name]),
                 'names': label_names(metadata, name)}
          for name in ('labels', 'instances', 'parts') if name in result}
  if maps:
    out['label_maps'] = maps
  return out


def draw(image: np.ndarray, result: dict, metadata: dict,
         threshold: float = 0.2) -> np.ndarray:
  """`image` (RGB) with the label map and skeletons drawn over it."""
  drawn = image
  shown = _shown_labels(result)
  if shown is not None:
    name, labels = shown
    drawn = visualization.overlay_labels(
        drawn, labels,
        colors=None if name == 'instances' else _label_colors(metadata))
  return draw_poses(drawn, [p['keypoints'] for p in result['people']],
                    result.get('joints', {}), skeleton_of(metadata),
                    threshold)


def draw_poses(image: np.ndarray, poses, joints: dict, skeleton,
               threshold: float = 0.2) -> np.ndarray:
  """`image` with people's `poses` (x, y, score per joint, flat or [K, 3])
  and the first joint head's `joints` ({head: [K, 2]}, fully confident)
  drawn in `skeleton`."""
  poses = [np.reshape(p, (-1, 3)) for p in poses if len(p)]
  poses += [np.concatenate([xy, np.full((len(xy), 1), 2.0)], -1)
            for xy in list(map(np.asarray, joints.values()))[:1]]
  if skeleton is None or not poses:
    return image
  return visualization.draw_skeleton(image, np.stack(poses), skeleton,
                                     threshold=threshold, faint=True)


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
  """An RGB image as JPEG bytes."""
  ok, data = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, quality])
  if not ok:
    raise ValueError('could not encode a JPEG')
  return data.tobytes()
