"""Evaluation of the multi-person part model (part_rcnn) over a split.

The jitted predict step runs detector and RoI head, then, still on the
device, maps every detection back into the input image: its mask
probabilities are pasted into the image (`roi_align.paste_rois`), each
pixel goes to the highest-scoring detection whose whole-body probability
there exceeds 0.5 (overlapping people are resolved by score), and takes
that person's most probable part (parts are clipped by the body mask).
Keypoints are read from each joint's distribution over its RoI grid and
mapped, like the boxes, into the original image.

The host turns detections scoring at least ``eval.min_detection_score``
into COCO results and scores them with pycocotools against the split's
ground truth (`instance_metrics`), under names that say the protocol:

* ``box_ap`` ... ``box_ar_large``: person boxes;
* ``mask_ap`` ... ``mask_ar_large``: person masks, the score-resolved
  masks mapped back to the original image;
* ``oks_ap_detbox`` ... ``oks_ar_large_detbox``: keypoints of the detected
  people (OKS);
* ``part_iou_matched/<part>``, ``part_miou_matched``, ``matched_fraction``:
  body-part IoU over the people matched to a ground-truth person (box IoU
  >= 0.5), in the model's input frame, for data with part maps.

The primary metric (best checkpoint) is ``mask_ap``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hpe_jax import visualization
from hpe_jax.data import example as example_lib
from hpe_jax.data import warp
from hpe_jax.evaluation import batched_prediction
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.evaluation import instance_metrics
from hpe_jax.ops import affine
from hpe_jax.ops import heatmap_decoding
from hpe_jax.ops import images as images_lib
from hpe_jax.ops import roi_align
from hpe_jax.training import sharding

BODY_THRESHOLD = 0.5
# Previews show the more confident people only.
PREVIEW_MIN_SCORE = 0.2
# Keys of the batch the host needs besides the predictions.
BATCH_KEYS = ('image_id', 'affine', 'valid', 'boxes', 'person_valid',
              'instance_map', 'part_map')


def compose_people(probs, scores, min_score: float):
  """Instance and part maps of people pasted into the image.

  Args:
    probs: [B, D, H, W, P + 1] part and (last) whole-body probabilities of
      each detection, pasted into the image.
    scores: [B, D] detection scores, best first.
    min_score: detections below it are left out.

  Returns:
    (instances uint8 [B, H, W]: 0 nobody, d + 1 for detection d;
    parts uint8 [B, H, W]: 0 background, p + 1 for part p).
  """
  body = (probs[..., -1] > BODY_THRESHOLD) & (
      scores >= min_score)[:, :, None, None]
  claim = jnp.where(body, scores[:, :, None, None], -1.0)
  owner = jnp.argmax(claim, axis=1)  # the first, i.e. best, on ties
  anyone = body.any(axis=1)
  part_probs = jnp.take_along_axis(probs[..., :-1], owner[:, None, ..., None],
                                   axis=1)[:, 0]
  parts = jnp.where(anyone, jnp.argmax(part_probs, -1) + 1, 0)
  instances = jnp.where(anyone, owner + 1, 0)
  return instances.astype(jnp.uint8), parts.astype(jnp.uint8)


def _roi_to_input(grid_xy, rois, size: int):
  """Points on RoIs' size x size grids [B, D, K, 2] -> input pixels."""
  origin = rois[:, :, None, :2]
  extent = rois[:, :, None, 2:] - origin
  return (grid_xy + 0.5) / size * extent + origin - 0.5


def _boxes_to_image(boxes, image_to_input):
  """Boxes [B, D, 4] in input pixels -> original image pixels.

  The affines map pixel-index coordinates (pixel centres), box edges are
  continuous: shifted by half a pixel either side of the mapping.
  """
  inverse = affine.invert(image_to_input)[:, None]
  corners = boxes.reshape(*boxes.shape[:2], 2, 2) - 0.5
  mapped = affine.apply(inverse, corners) + 0.5
  return jnp.concatenate([mapped.min(-2), mapped.max(-2)], -1)


def predict_people(variables, batch, *, model, min_score: float):
  """Detections, their keypoints and the composed instance / part maps."""
  images = images_lib.normalize(batch['image'], model.dtype)
  out = model.apply(variables, images, train=False)
  rois, scores = out['rois'], out['scores']
  probs = jax.nn.sigmoid(out['mask_logits'].astype(jnp.float32))
  pasted = roi_align.paste_rois(probs, rois, images.shape[1:3])
  instances, parts = compose_people(pasted, scores, min_score)
  # A joint's confidence is its probability mass in the 3x3 cells around
  # the peak: near 1 for a peak as sharp as the training targets.
  logits = out['keypoint_logits'].astype(jnp.float32)
  b, d, m, _, k = logits.shape
  probs_kp = jax.nn.softmax(logits.reshape(b, d, m * m, k), axis=2).reshape(
      logits.shape)
  mass = jax.lax.reduce_window(probs_kp, 0.0, jax.lax.add, (1, 1, 3, 3, 1),
                               (1, 1, 1, 1, 1), 'SAME')
  grid_xy, kp_scores = heatmap_decoding.decode_heatmaps(mass, 'quarter')
  input_xy = _roi_to_input(grid_xy, rois, m)
  image_xy = heatmap_decoding.heatmap_to_image_coords(
      input_xy, batch['affine'][:, None])
  kp_scores = kp_scores[..., None]
  return dict(rois=rois, scores=scores,
              image_boxes=_boxes_to_image(rois, batch['affine']),
              keypoints=jnp.concatenate([image_xy, kp_scores], -1),
              input_keypoints=jnp.concatenate([input_xy, kp_scores], -1),
              instances=instances, parts=parts)


def make_predict_fn(model, min_score: float, mesh):
  """`predict_people` jitted over the mesh."""
  if model.max_detections > 254:
    raise ValueError('instance maps are uint8: max_detections must be at '
                     f'most 254, got {model.max_detections}')
  return batched_prediction.jit_predict(
      functools.partial(predict_people, model=model, min_score=min_score),
      mesh)


def image_people(host, i: int, min_score: float) -> dict:
  """Image `i` of a host batch: its detections scoring >= `min_score`.

  Returns the image's instance and part maps in the input frame, and
  ``kept`` (indices of the detections, best first) with their ``rois``
  (input frame), ``image_boxes``, ``scores``, ``keypoints`` (image pixels,
  score) and ``input_keypoints`` (input frame).
  """
  kept = np.flatnonzero(host['scores'][i] >= min_score)
  people = {k: host[k][i][kept]
            for k in ('rois', 'image_boxes', 'scores', 'keypoints',
                      'input_keypoints')}
  people.update(kept=kept, instances=host['instances'][i],
                parts=host['parts'][i])
  return people


def image_instances(people, image_to_input, shape):
  """The instance map of `image_people` mapped back to the original image
  (`shape`), and the kept detections' masks there."""
  instances = warp.labels_to_image(people['instances'], image_to_input,
                                   shape)
  return instances, [instances == d + 1 for d in people['kept']]


class PartRCNNEvaluator:
  """Runs a part_rcnn model over an evaluation split and scores it."""

  def __init__(self, dataset: example_lib.ImageDataset,
               input_cfg: ml_collections.ConfigDict,
               eval_cfg: ml_collections.ConfigDict, *, model, mesh,
               batch_size: int):
    if input_cfg.mode != 'full_image' or input_cfg.output_stride != 1:
      raise ValueError("part_rcnn evaluates full images at output stride "
                       "1: set input.mode='full_image', "
                       'input.output_stride=1')
    if eval_cfg.flip or eval_cfg.boxes != 'gt':
      raise ValueError('part_rcnn detects its own people and has no flip '
                       "test: leave eval.boxes='gt' and eval.flip=False")
    self.dataset = dataset
    self.cfg = eval_cfg
    self.mesh = mesh
    self.min_score = eval_cfg.min_detection_score
    self.coco_gt = instance_metrics.coco_ground_truth(dataset)
    schema = dataset.part_schema
    self.part_names = (schema.label_names if schema is not None and
                       schema.num_labels == model.num_parts + 1 else None)
    self.batches, self.count = batched_prediction.eval_batches(
        dataset, input_cfg, batch_size, mesh)
    self.predict_fn = make_predict_fn(model, self.min_score, mesh)
    self.primary_metric = 'mask_ap'

  def predict(self, variables):
    """COCO results of every detection kept, the part metrics over matched
    people (empty without part maps) and previews of the first images."""
    results, previews, seen = [], [], 0
    parts = (instance_metrics.MatchedPartIoU(self.part_names)
             if self.part_names else None)
    for host, global_batch in batched_prediction.host_predictions(
        self.batches, self.predict_fn, variables, self.mesh, BATCH_KEYS):
      valid = np.flatnonzero(host['valid'])
      seen += len(valid)
      for i in valid:
        people = image_people(host, i, self.min_score)
        image_id = int(host['image_id'][i])
        info = self.coco_gt.imgs[image_id]
        _, masks = image_instances(people, host['affine'][i],
                                   (info['height'], info['width']))
        results += instance_metrics.instance_results(
            [image_id] * len(masks), people['image_boxes'], people['scores'],
            masks=masks, keypoints=people['keypoints'])
        if parts is not None:
          parts.add(host['rois'][i], host['scores'][i],
                    host['scores'][i] >= self.min_score,
                    host['instances'][i], host['parts'][i],
                    host['boxes'][i], host['person_valid'][i],
                    host['instance_map'][i], host['part_map'][i])
      if not previews:
        previews = self._previews(sharding.to_host(global_batch['image']),
                                  host, valid)
    batched_prediction.check_all_seen(seen, self.count, 'images')
    return results, parts.compute() if parts is not None else {}, previews

  def metrics(self, results, part_metrics) -> dict[str, float]:
    """Every metric of the module docstring from `predict`'s outputs."""
    out = instance_metrics.evaluate_instances(self.coco_gt, results, 'bbox')
    out.update(instance_metrics.evaluate_instances(self.coco_gt, results,
                                                   'segm'))
    out.update(coco_keypoints.evaluate_keypoints(
        self.coco_gt, instance_metrics.scored_copies(results, 'keypoints'),
        coco_keypoints.protocol_suffix_for('detected', False),
        sigmas=self.dataset.skeleton.oks_sigmas))
    out.update(part_metrics)
    return {k: float(v) for k, v in out.items()}

  def evaluate(self, variables) -> tuple[dict[str, float], list[np.ndarray]]:
    """Metrics over the split and previews of the first images."""
    results, part_metrics, previews = self.predict(variables)
    return self.metrics(results, part_metrics), previews

  def _previews(self, images, host, valid) -> list[np.ndarray]:
    out = []
    for i in valid[:self.cfg.num_preview_images]:
      people = image_people(host, i, max(self.min_score, PREVIEW_MIN_SCORE))
      out.append(visualization.draw_people(
          images[i], people['instances'], people['parts'], people['kept'],
          people['input_keypoints'], self.dataset.skeleton))
    return out

