"""Multi-person body parts: a CenterNet person detector and an RoI head with
part masks and keypoints per person, on full images.

Training: targets come from the full-image sample at output stride 1:
``boxes`` and ``person_valid`` for the detector (`codecs.centers`); for RoI
r (person slot r, jittered box) the crops of ``instance_map`` == r + 1
(whole body) and of ``part_map`` within it, and that person's keypoints on
the RoI grid (`codecs.roi_keypoints`). CenterNet focal loss on the centre
heatmap and L1 on log box sizes and centre offsets; per RoI, sigmoid
cross-entropy of the whole-body channel, a softmax cross-entropy over the
part channels inside the body and Mask R-CNN's spatial cross-entropy of the
keypoints.

Evaluation: the jitted predict step runs detector and RoI head, then, still on the
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

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hpe_jax import visualization
from hpe_jax.codecs import centers
from hpe_jax.codecs import heatmap
from hpe_jax.codecs import roi_keypoints
from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons
from hpe_jax.data import warp
from hpe_jax.evaluation import batched_prediction
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.evaluation import instance_metrics
from hpe_jax.ops import affine
from hpe_jax.ops import images as images_lib
from hpe_jax.ops import roi_align
from hpe_jax.runtime import sharding
from hpe_jax.tasks import base
from hpe_jax.training import losses

BODY_THRESHOLD = 0.5
# Previews show the more confident people only.
PREVIEW_MIN_SCORE = 0.2
# Keys of the batch the host needs besides the predictions.
BATCH_KEYS = ('image_id', 'affine', 'valid', 'boxes', 'person_valid',
              'instance_map', 'part_map')


@dataclasses.dataclass(frozen=True)
class PartRCNNTask(base.Task):
  """Detection plus per-person part masks and keypoints, on full images.

  Targets come from the full-image sample at output stride 1: ``boxes`` and
  ``person_valid`` for the detector; for RoI r (person slot r, jittered
  box) the crops of ``instance_map`` == r + 1 (whole body) and of
  ``part_map`` within it, and that person's ``keypoints`` on the RoI grid.
  Pixels of unknown label are left out, as are part labels of data without
  part maps (COCO-format masks train the body channel only).
  """

  rng_streams = ('jitter',)  # the RoI box jitter in training
  serving_rows = 'image'
  serving_results = 'people'

  @staticmethod
  def default_loss_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        center_weight=1.0,  # focal loss on the centre heatmap
        size_weight=1.0,  # L1 on log box width and height
        offset_weight=1.0,  # L1 on the centre's sub-cell offset
        body_weight=1.0,  # sigmoid cross-entropy of the whole-body mask
        parts_weight=1.0,  # softmax cross-entropy of the parts in the body
        keypoint_weight=0.5,  # spatial cross-entropy per joint
        keypoint_sigma=2.0,  # target Gaussians, in cells of a 56 grid
    ))

  def model_inputs(self, batch, dtype) -> dict:
    return {'images': images_lib.normalize(batch['image'], dtype),
            'boxes': batch['boxes'], 'box_valid': batch['person_valid']}

  def loss(self, outputs, batch):
    cfg = self.loss_cfg
    valid = batch['person_valid'] & batch['valid'][:, None]
    parts = self._detector_loss(outputs, batch['boxes'], valid)
    parts.update(self._roi_loss(outputs, batch))
    total = sum(cfg[f'{name}_weight'] * value
                for name, value in parts.items())
    return total, parts

  def _detector_loss(self, outputs, boxes, valid):
    heat = outputs['center_logits']
    stride = self.output_size[0] // heat.shape[1]
    t = centers.center_targets(boxes, valid, heat.shape[1:], stride)
    count = t['weight'].sum()
    weight = t['weight'][..., None]

    def l1(name, target):
      pred = centers.gather_cells(outputs[name], t['index'])
      return (jnp.abs(pred.astype(jnp.float32) - target) * weight).sum() / (
          2 * jnp.maximum(count, 1.0))

    return {'center': losses.center_focal_loss(heat, t['heatmap'], count),
            'size': l1('log_sizes', t['log_size']),
            'offset': l1('offsets', t['offset'])}

  def _roi_loss(self, outputs, batch):
    rois = outputs['rois']
    logits = outputs['mask_logits'].astype(jnp.float32)
    r, m = rois.shape[1], logits.shape[2]
    roi_valid = outputs['roi_valid'] & batch['valid'][:, None]
    ignore = skeletons.IGNORE_LABEL
    instances = roi_align.crop_labels(batch['instance_map'], rois, m)
    part_map = roi_align.crop_labels(batch['part_map'], rois, m)
    body = instances == jnp.arange(1, r + 1)[None, :, None, None]
    known = (instances != ignore) & roi_valid[:, :, None, None]
    body_loss = losses.masked_mean(
        optax.sigmoid_binary_cross_entropy(logits[..., -1],
                                           body.astype(jnp.float32)),
        known.astype(jnp.float32))
    # Parts compete only inside the person (a softmax over the part
    # channels): the body channel already says where the person is.
    labelled = known & body & (part_map != ignore) & (part_map > 0)
    part_loss = losses.softmax_cross_entropy(
        logits[..., :-1],
        jnp.where(labelled, part_map.astype(jnp.int32) - 1, ignore))

    # Keypoints (input pixels at stride 1) onto each RoI's m x m grid.
    codec = roi_keypoints.RoIKeypointCodec(m, self.loss_cfg.keypoint_sigma)
    maps, kp_weights = codec.encode(batch['keypoints'][:, :r], rois)
    keypoints = losses.spatial_cross_entropy(
        outputs['keypoint_logits'], maps, kp_weights * roi_valid[..., None])
    return {'body': body_loss, 'parts': part_loss, 'keypoint': keypoints}

  def training_labels(self, config):
    # Boxes and whole-body masks; parts and keypoints train where the data
    # has them.
    del config
    return ('person_masks',)

  def make_evaluator(self, config, dataset, model, mesh):
    return PartRCNNEvaluator(dataset, config.input, config.eval, model=model,
                             mesh=mesh,
                             batch_size=config.input.eval_batch_size)

  def make_predictor(self, config, model, mesh, skeleton, *,
                     min_score=0.3, keypoint_threshold=0.2):
    del skeleton, keypoint_threshold
    return PartRCNNPredictor(config, model, mesh, min_score)

  def part_schema(self, config):
    return datasets.part_schema(config.dataset)

  def serving_function(self, config, model, skeleton, *, min_score=0.3):
    del config, skeleton
    return predict_function(model, min_score), {}

  def draw(self, image, result, skeleton, threshold):
    labels = result['label_images']
    return visualization.draw_people(
        image, labels['instances'], labels['parts'], result['kept'],
        result['keypoints'], skeleton, threshold=threshold)


TASK = PartRCNNTask


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
  logits = out['keypoint_logits']
  codec = roi_keypoints.RoIKeypointCodec(size=logits.shape[2])
  input_xy, kp_scores = codec.decode(logits, rois)
  image_xy = heatmap.heatmap_to_image_coords(input_xy,
                                             batch['affine'][:, None])
  kp_scores = kp_scores[..., None]
  return dict(rois=rois, scores=scores,
              image_boxes=_boxes_to_image(rois, batch['affine']),
              keypoints=jnp.concatenate([image_xy, kp_scores], -1),
              input_keypoints=jnp.concatenate([input_xy, kp_scores], -1),
              instances=instances, parts=parts)


def predict_function(model, min_score: float):
  """`predict_people` of one model: (variables, batch) -> dict."""
  if model.max_detections > 254:
    raise ValueError('instance maps are uint8: max_detections must be at '
                     f'most 254, got {model.max_detections}')
  return functools.partial(predict_people, model=model, min_score=min_score)


def make_predict_fn(model, min_score: float, mesh):
  """`predict_function` jitted over the mesh."""
  return batched_prediction.jit_predict(predict_function(model, min_score),
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
    self.coco_gt = coco.coco_ground_truth(dataset)
    schema = dataset.part_schema
    self.part_names = (schema.label_names if schema is not None and
                       schema.num_labels == model.num_parts + 1 else None)
    self.batches, self.count = batched_prediction.eval_batches(
        dataset, input_cfg, batch_size, mesh)
    self.predict_fn = make_predict_fn(model, self.min_score, mesh)
    self.primary_metric = 'mask_ap'
    self.results = None

  def predict(self, variables):
    """COCO results of every detection kept, the part metrics over matched
    people (empty without part maps) and previews of the first images."""
    results, previews = [], []
    tally = batched_prediction.ExampleTally()
    parts = (instance_metrics.MatchedPartIoU(self.part_names)
             if self.part_names else None)
    for host, global_batch in batched_prediction.host_predictions(
        self.batches, self.predict_fn, variables, self.mesh, BATCH_KEYS,
        tally):
      valid = np.flatnonzero(host['valid'])
      for i in valid:
        people = image_people(host, i, self.min_score)
        image_id = int(host['image_id'][i])
        info = self.coco_gt.imgs[image_id]
        _, masks = image_instances(people, host['affine'][i],
                                   (info['height'], info['width']))
        results += coco.instance_results(
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
    counts = tally.check(self.count, 'images')
    return (results, {**(parts.compute() if parts is not None else {}),
                      **counts}, previews)

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
    self.results, part_metrics, previews = self.predict(variables)
    return self.metrics(self.results, part_metrics), previews

  def _previews(self, images, host, valid) -> list[np.ndarray]:
    out = []
    for i in valid[:self.cfg.num_preview_images]:
      people = image_people(host, i, max(self.min_score, PREVIEW_MIN_SCORE))
      out.append(visualization.draw_people(
          images[i], people['instances'], people['parts'], people['kept'],
          people['input_keypoints'], self.dataset.skeleton))
    return out


class PartRCNNPredictor:
  """Every person the model finds: box, keypoints, mask and body parts."""

  def __init__(self, config, model, mesh, min_score: float):
    self.config, self.mesh, self.min_score = config, mesh, min_score
    self.predict_fn = make_predict_fn(model, min_score, mesh)

  def predict(self, variables, images, boxes=None, poses=None):
    del boxes, poses

    def result_of(ann, host, i):
      shape = (ann['height'], ann['width'])
      people = image_people(host, i, self.min_score)
      instances, masks = image_instances(people, host['affine'][i], shape)
      parts = warp.labels_to_image(people['parts'], host['affine'][i], shape)
      return {
          'image_id': ann['image_id'],
          'people': coco.instance_results(
              [ann['image_id']] * len(masks), people['image_boxes'],
              people['scores'], keypoints=people['keypoints'], masks=masks),
          'kept': people['kept'], 'keypoints': people['keypoints'],
          'label_images': {'instances': instances, 'parts': parts}}

    return batched_prediction.predict_images(
        images, self.config.input, self.config.input.eval_batch_size,
        self.predict_fn, variables, self.mesh, result_of)
