"""Pose-conditioned person masks: an image crop plus that person's keypoints.

Training: MSE (or BCE) of the network's tanh output against the person mask
mapped to -1 / +1, pixels of unknown label left out.

Evaluation: every ground-truth person of the evaluation split is cropped like in
training and given its labelled keypoints (the network needs a pose, so
detected boxes do not apply); the model's
output above 0 is the predicted mask, compared with the person's mask on
the crop grid by `segmentation_metrics.SegmentationMetrics`:
``mask_iou`` (mean over people, the design's score), ``mask_dice``,
the pooled variants and ``pixel_accuracy``. The skeleton prior alone (above
0.5) is scored too, as ``prior/mask_iou`` etc., so every evaluation shows
what the network adds to it. The primary metric is ``mask_iou``.
With ``eval.refine`` (``crf`` or ``superpixel_graphcut``, see
`hpe_jax.refinement.refine_option`) the masks are refined after the
network: ``mask_iou`` etc. are then the refined masks', the network's own
are ``unrefined/mask_iou`` etc., and ``refine_seconds_per_image`` is
reported.

Prediction takes the people's poses (e.g. a keypoint model's results, in
its own skeleton or the training dataset's), crops each person around its
joints and paints every person's mask (refined with ``eval.refine``) in its
own label, best score on top.
"""

from __future__ import annotations

import dataclasses
import functools

from absl import app
import jax.numpy as jnp
import ml_collections
import numpy as np

from hpe_jax import visualization
from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeleton_conversion
from hpe_jax.data import skeletons
from hpe_jax.data import warp
from hpe_jax.evaluation import batched_prediction
from hpe_jax.evaluation import segmentation_metrics
from hpe_jax.ops import images as images_lib
from hpe_jax.refinement import dense_crf
from hpe_jax.refinement import refine_option
from hpe_jax.runtime import sharding
from hpe_jax.tasks import base
from hpe_jax.training import losses

LOSSES = ('mse', 'bce')
# A box around a person's joints misses the head top, hands and feet edges;
# crops use it enlarged by this factor (before input.box_padding).
POSE_BOX_SCALE = 1.15


@dataclasses.dataclass(frozen=True)
class PoseMaskTask(base.Task):
  """Person mask from an image crop and that person's keypoints."""

  serving_rows = 'poses'
  serving_results = 'masks'

  def __post_init__(self):
    base.check_choice(self.loss_cfg.name, LOSSES, 'loss.name')

  @staticmethod
  def default_loss_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(name='mse'))  # or 'bce'

  default_eval_config = staticmethod(refine_option.eval_config)

  def model_inputs(self, batch, dtype) -> dict:
    return {'images': images_lib.normalize(batch['image'], dtype),
            'keypoints': batch['keypoints']}

  def init_inputs(self, image_size, num_joints, dtype) -> dict:
    return {'images': jnp.zeros((1, *image_size, 3), dtype),
            'keypoints': jnp.zeros((1, num_joints, 3), jnp.float32)}

  def loss(self, outputs, batch):
    labels = batch['mask']
    known = (labels != skeletons.IGNORE_LABEL).astype(jnp.float32)
    target = jnp.where(labels == 1, 1.0, -1.0)
    pred = outputs['mask']
    if self.loss_cfg.name == 'mse':
      per_pixel = jnp.square(pred - target)
    else:
      # The tanh output maps to a probability; clipped so log stays finite.
      p = jnp.clip((pred + 1) / 2, 1e-6, 1 - 1e-6)
      y = (target + 1) / 2
      per_pixel = -(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))
    value = losses.masked_mean(per_pixel, known)
    return value, {f'mask_{self.loss_cfg.name}': value}

  def training_labels(self, config):
    # The keypoints are the model's input, the mask its target.
    del config
    return ('keypoints', 'person_masks')

  def make_evaluator(self, config, dataset, model, mesh, workdir=None):
    # `workdir`: where searched refinement params are (eval.refine).
    return PoseMaskEvaluator(
        dataset, config.input, config.eval, model=model, mesh=mesh,
        batch_size=config.input.eval_batch_size,
        detections=base.load_detections(config, dataset), workdir=workdir)

  def make_predictor(self, config, model, mesh, skeleton, *,
                     min_score=0.3, keypoint_threshold=0.2, workdir=None):
    del min_score
    return PoseMaskPredictor(config, model, mesh, skeleton,
                             keypoint_threshold, workdir=workdir)

  def serving_function(self, config, model, skeleton, *, min_score=0.3):
    del min_score
    # Each person's joints, in the output grid of its crop (as in training).
    return predict_function(model), {
        'keypoints': ((skeleton.num_joints, 3), np.float32)}

  def draw(self, image, result, skeleton, threshold):
    del threshold
    drawn = visualization.overlay_labels(
        image, result['label_images']['labels'])
    kp = result['keypoints']
    if len(kp):
      drawn = visualization.draw_skeleton(drawn, kp, skeleton)
    return drawn


TASK = PoseMaskTask


def predict_mask(variables, batch, *, model, dtype, probs: bool = False):
  """Predicted and prior masks [B, h, w] (uint8 0/1) of person crops and,
  with `probs`, ``class_probs`` [B, h, w, 2]: (background, person)
  probabilities of the tanh output, for refinement."""
  out = model.apply(variables, images_lib.normalize(batch['image'], dtype),
                    batch['keypoints'], train=False)
  result = {'labels': (out['mask'] > 0).astype(jnp.uint8),
            'prior_labels': (out['prior'] > 0.5).astype(jnp.uint8)}
  if probs:
    result['class_probs'] = dense_crf.binary_probs(out['mask'])
  return result


def predict_function(model, probs: bool = False):
  """`predict_mask` of one model: (variables, batch) -> dict."""
  return functools.partial(predict_mask, model=model, dtype=model.dtype,
                           probs=probs)


def make_predict_fn(model, mesh, probs: bool = False):
  """`predict_function` jitted over the mesh."""
  return batched_prediction.jit_predict(predict_function(model, probs), mesh)


class PoseMaskEvaluator:
  """Scores the person masks of a pose-conditioned model (see above)."""

  def __init__(self, dataset: example_lib.ImageDataset,
               input_cfg: ml_collections.ConfigDict,
               eval_cfg: ml_collections.ConfigDict, *, model, mesh,
               batch_size: int, detections=None, workdir=None):
    # Checked first: a mistyped option fails before any data is read.
    self.refiner = refine_option.make(eval_cfg, mesh, workdir=workdir,
                                      skeleton=dataset.skeleton)
    if input_cfg.mode != 'top_down':
      raise ValueError("the pose-mask network sees person crops; set "
                       "input.mode='top_down'")
    if detections is not None:
      raise ValueError('the pose-mask network needs each person\'s '
                       "keypoints; evaluate it with eval.boxes='gt'")
    if eval_cfg.flip:
      raise ValueError('the flip test is not implemented for the pose-mask '
                       'network; set eval.flip=false')
    if not dataset.has_masks:
      raise ValueError(f'{dataset.name} has no person masks to evaluate')
    self.dataset = dataset
    self.cfg = eval_cfg
    self.mesh = mesh
    self.batches, self.count = batched_prediction.eval_batches(
        dataset, input_cfg, batch_size, mesh)
    self.predict_fn = (
        make_predict_fn(model, mesh) if self.refiner is None else
        self.refiner.wrap(make_predict_fn(model, mesh, probs=True)))
    self.primary_metric = 'mask_iou'
    self.results = None

  def evaluate(self, variables) -> tuple[dict[str, float], list[np.ndarray]]:
    """Metrics over the split and preview overlays of the first people."""
    model = segmentation_metrics.SegmentationMetrics(2)
    prior = segmentation_metrics.SegmentationMetrics(2)
    refined = segmentation_metrics.SegmentationMetrics(2)
    previews = []
    tally = batched_prediction.ExampleTally()
    keys = ('mask', 'keypoints')
    if self.refiner is not None:
      self.refiner.reset()
      keys += self.refiner.host_keys
    for host, global_batch in batched_prediction.host_predictions(
        self.batches, self.predict_fn, variables, self.mesh, keys, tally):
      model.add(host['labels'], host['mask'], host['valid'])
      prior.add(host['prior_labels'], host['mask'], host['valid'])
      if self.refiner is not None:
        host['labels'] = self.refiner.refined(host, host['keypoints'])
        refined.add(host['labels'], host['mask'], host['valid'])
      if not previews:
        previews = self._previews(sharding.to_host(global_batch['image']),
                                  host)
    counts = tally.check(self.count, 'people')
    out = model.compute()
    if self.refiner is not None:
      out = self.refiner.metrics(refined.compute(), out)
    out.update(counts)
    out.update({f'prior/{k}': v for k, v in prior.compute().items()})
    return {k: float(v) for k, v in out.items()}, previews

  def _previews(self, images, host) -> list[np.ndarray]:
    n = min(self.cfg.num_preview_images, int(host['valid'].sum()))
    return [visualization.draw_skeleton(
        visualization.overlay_labels(images[i], host['labels'][i]),
        host['keypoints'][i], self.dataset.skeleton) for i in range(n)]


class PoseMaskPredictor:
  """Every given person's mask, from its pose (``poses`` is required)."""

  def __init__(self, config, model, mesh, skeleton,
               keypoint_threshold: float, workdir=None):
    self.config, self.mesh, self.skeleton = config, mesh, skeleton
    self.refiner = refine_option.make(config.eval, mesh, workdir=workdir,
                                      skeleton=skeleton)
    self.predict_fn = (
        make_predict_fn(model, mesh) if self.refiner is None else
        self.refiner.wrap(make_predict_fn(model, mesh, probs=True)))
    # Joints scoring below it are not given to the model.
    self.keypoint_threshold = keypoint_threshold

  def _people(self, poses):
    """{image_id: (keypoints, boxes)} of `poses` in the model's skeleton.

    The poses may be in the model's skeleton or in the training dataset's
    own (e.g. COCO-17 for an LSP-14 model), which is converted.
    """
    source = datasets.SKELETONS[self.config.dataset.name]
    people = {}
    for image_id, (kp, _) in poses.items():
      for candidate in (self.skeleton, source):
        if candidate is not None and candidate.num_joints == kp.shape[1]:
          kp = skeleton_conversion.convert_keypoints(kp, candidate,
                                                     self.skeleton)
          break
      else:
        raise example_lib.DatasetError(
            f'poses: expected people with {self.skeleton.num_joints} joints '
            f'({self.skeleton.name}) or {source.num_joints} ({source.name}), '
            f'found {kp.shape[1]}')
      kp = kp.copy()
      kp[..., 2] = np.where(kp[..., 2] > self.keypoint_threshold, 2, 0)
      boxes = example_lib.boxes_from_keypoints(kp)
      centre = (boxes[:, :2] + boxes[:, 2:]) / 2
      half = (boxes[:, 2:] - boxes[:, :2]) / 2 * POSE_BOX_SCALE
      people[image_id] = (kp, np.concatenate([centre - half, centre + half],
                                             -1))
    return people

  def predict(self, variables, images, boxes=None, poses=None):
    del boxes
    if poses is None:
      raise app.UsageError('a pose_mask run needs --poses (COCO keypoint '
                           'results, e.g. from predicting with a keypoint '
                           'model)')
    images.set_people(self._people(poses))
    found = {}
    batches, _ = batched_prediction.eval_batches(
        images, self.config.input, self.config.input.eval_batch_size,
        self.mesh)
    keys = ('image_id', 'person_index', 'affine', 'valid', 'gt_keypoints')
    if self.refiner is not None:
      keys += self.refiner.host_keys
    for host, _ in batched_prediction.host_predictions(
        batches, self.predict_fn, variables, self.mesh, keys):
      if self.refiner is not None:
        host['labels'] = self.refiner.refined(host, host.get('keypoints'))
      for i in np.flatnonzero(host['valid']):
        found.setdefault(int(host['image_id'][i]), []).append(
            (int(host['person_index'][i]), host['labels'][i],
             host['affine'][i], host['gt_keypoints'][i]))
    out = []
    for i in range(len(images)):
      ann = images.annotation(i)
      image_id = ann['image_id']
      people = sorted(found.get(image_id, []), key=lambda p: p[0])
      instances = np.zeros((ann['height'], ann['width']), np.uint8)
      # People are ordered by score; the best one is painted last, on top.
      for rank, (_, labels, affine, _) in reversed(list(enumerate(people))):
        mask = warp.labels_to_image(labels, affine, instances.shape) > 0
        instances[mask] = rank + 1
      keypoints = (np.stack([p[3] for p in people]) if people else
                   np.zeros((0, self.skeleton.num_joints, 3), np.float32))
      order = [p[0] for p in people]
      out.append({
          'image_id': image_id, 'keypoints': keypoints,
          'label_images': {'labels': instances},
          'people': coco.instance_results(
              [image_id] * len(people), ann['boxes'][order],
              poses[image_id][1][order] if people else np.zeros(0),
              masks=[instances == r + 1 for r in range(len(people))],
              keypoints=keypoints)})
    return out
