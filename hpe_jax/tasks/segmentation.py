"""Segmentation: the U-Net family on full images, with optional joint heads.

Training: soft Dice and/or cross-entropy on the mask (person or body parts,
``loss.mask_target``), plus the joint heads of the multi-task U-Nets:
heatmap regression (MSE on the codec's Gaussians scaled by
``joint_regression_scale``) and a per-pixel softmax over background +
joints (cross-entropy on hard or Gaussian soft targets).

Evaluation: the jitted predict step runs the model (with the flip test, also on the
mirrored images, averaging the flipped-back softmax probabilities; part
labels swap left and right), takes the per-pixel argmax of the mask and, for
the multi-task models, reads one location per joint channel: the argmax of
the regressed heatmap or of that joint's softmax logit. The host
accumulates `segmentation_metrics.SegmentationMetrics` over the valid
images, against the ``mask`` (person) or ``part_map`` (body parts) labels:

* ``mask_dice``, ``mask_iou`` (mean over images), ``mask_*_pooled``,
  ``pixel_accuracy`` for person masks; ``part_iou/<part>``, ``part_miou``
  for body parts (see `segmentation_metrics`);
* ``regression_pck@0.2_torso`` / ``softmax_pck@0.2_torso``: PCK of each
  joint head's skeleton, on images with exactly one person (a skeleton read
  from per-channel argmaxes describes one person);

each with ``_flip`` appended when the flip test is on. The primary metric
(for the best checkpoint) is ``mask_dice`` or ``part_miou``.

With ``eval.refine`` (`hpe_jax.refinement.refine_option`) the masks are
refined after the network: ``crf`` on the class probabilities (person or
parts), ``superpixel_graphcut`` for person masks from the ground-truth
keypoints of every person in the image (a dataset without keypoints, or a
part-map run, is refused). The mask metrics are then the refined masks',
the network's own are ``unrefined/<name>``, and
``refine_seconds_per_image`` is reported.

Prediction: the whole image, letterboxed; the labels (refined with
``eval.refine``; graph cut takes the people from ``poses``) are mapped back
to the image's size and the joints of each head into image pixels.
"""

from __future__ import annotations

import dataclasses
import functools
import json

from absl import app
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hpe_jax import errors
from hpe_jax import visualization
from hpe_jax.codecs import heatmap
from hpe_jax.data import datasets
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons
from hpe_jax.data import warp
from hpe_jax.evaluation import batched_prediction
from hpe_jax.evaluation import pck
from hpe_jax.evaluation import segmentation_metrics
from hpe_jax.ops import images as images_lib
from hpe_jax.refinement import refine_option
from hpe_jax.runtime import sharding
from hpe_jax.tasks import base
from hpe_jax.training import losses

PCK_ALPHA = 0.2
JOINT_OUTPUTS = {'regression': 'joint_heatmaps', 'softmax': 'joint_logits'}


MASK_TARGETS = ('mask', 'part_map')
SOFTMAX_TARGETS = ('hard', 'gaussian')


@dataclasses.dataclass(frozen=True)
class SegmentationTask(base.Task):
  """Mask (person or parts) with optional joint heads, on full images."""

  serving_rows = 'image'
  serving_results = 'label_map'

  def __post_init__(self):
    base.check_choice(self.loss_cfg.mask_target, MASK_TARGETS,
                      'loss.mask_target')
    base.check_choice(self.loss_cfg.joint_softmax_target, SOFTMAX_TARGETS,
                      'loss.joint_softmax_target')

  @staticmethod
  def default_loss_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        mask_target='mask',  # 'mask' (person) or 'part_map' (body parts)
        dice_weight=1.0,  # soft Dice on the mask softmax
        ce_weight=0.0,  # cross-entropy on the mask softmax
        joint_regression_weight=1e-3,
        joint_regression_scale=100.0,  # heatmap targets are multiplied
        joint_softmax_weight=1.0,
        joint_softmax_target='hard',  # or 'gaussian' (soft targets)
    ))

  default_eval_config = staticmethod(refine_option.eval_config)

  def loss(self, outputs, batch):
    cfg = self.loss_cfg
    labels = batch[cfg.mask_target].astype(jnp.int32)
    # Padding examples (valid=False) have every label unknown already.
    parts = {}
    if cfg.dice_weight:
      parts['mask_dice'] = losses.soft_dice_loss(outputs['mask_logits'],
                                                 labels)
    if cfg.ce_weight:
      parts['mask_ce'] = losses.softmax_cross_entropy(outputs['mask_logits'],
                                                      labels)
    total = (cfg.dice_weight * parts.get('mask_dice', 0.0) +
             cfg.ce_weight * parts.get('mask_ce', 0.0))
    if 'joint_heatmaps' in outputs or 'joint_logits' in outputs:
      kp = batch['keypoints']
      maps, weights = self.codec.encode_people(
          kp, batch['person_valid'], self.output_size)
      image_weight = batch['valid'].astype(jnp.float32)
      if 'joint_heatmaps' in outputs:
        parts['joint_regression'] = losses.heatmap_mse(
            outputs['joint_heatmaps'], cfg.joint_regression_scale * maps,
            weights * image_weight[:, None])
        total += cfg.joint_regression_weight * parts['joint_regression']
      if 'joint_logits' in outputs:
        logits = outputs['joint_logits']
        pixel_weight = jnp.broadcast_to(image_weight[:, None, None],
                                        logits.shape[:3])
        if cfg.joint_softmax_target == 'gaussian':
          target = heatmap.joint_label_targets(maps, soft=True)
          ce = losses.soft_target_cross_entropy(logits, target, pixel_weight)
        else:
          target = heatmap.joint_label_targets(maps, soft=False)
          target = jnp.where(pixel_weight > 0, target,
                             skeletons.IGNORE_LABEL)
          ce = losses.softmax_cross_entropy(logits, target)
        parts['joint_softmax'] = ce
        total += cfg.joint_softmax_weight * ce
    return total, parts

  def training_labels(self, config):
    labels = ('person_masks' if self.loss_cfg.mask_target == 'mask'
              else 'part_map',)
    if config.model.get('joint_head', 'none') != 'none':
      labels += ('keypoints',)
    return labels

  def make_evaluator(self, config, dataset, model, mesh, workdir=None):
    # `workdir`: where searched refinement params are (eval.refine).
    return SegmentationEvaluator(
        dataset, config.input, config.eval, self.codec, model=model,
        mesh=mesh, batch_size=config.input.eval_batch_size,
        target=self.loss_cfg.mask_target, workdir=workdir)

  def part_schema(self, config):
    return (datasets.part_schema(config.dataset)
            if self.loss_cfg.mask_target == 'part_map' else None)

  def make_predictor(self, config, model, mesh, skeleton, *,
                     min_score=0.3, keypoint_threshold=0.2, workdir=None):
    del min_score
    return SegmentationPredictor(config, model, mesh, skeleton,
                                 self.part_schema(config),
                                 keypoint_threshold=keypoint_threshold,
                                 workdir=workdir)

  def serving_function(self, config, model, skeleton, *, min_score=0.3):
    del min_score
    return predict_function(model, skeleton, self.part_schema(config),
                            config.eval.flip), {}

  def draw(self, image, result, skeleton, threshold):
    del threshold
    labels = result['label_images']['labels']
    parts = result['part_schema']
    drawn = visualization.overlay_labels(
        image, labels, colors=None if parts is None else parts.colors)
    for xy in list(result.get('joints', {}).values())[:1]:
      kp = np.concatenate([xy, np.full((len(xy), 1), 2.0)], -1)
      drawn = visualization.draw_skeleton(drawn, kp, skeleton)
    if parts is not None:
      drawn = visualization.add_legend(drawn, labels, parts.label_names,
                                       parts.colors)
    return drawn

  def save_prediction(self, out_dir, stem, image, result, skeleton,
                      threshold):
    super().save_prediction(out_dir, stem, image, result, skeleton,
                            threshold)
    if result['joints']:
      with open(f'{out_dir}/{stem}.json', 'w') as f:
        json.dump({'image_id': result['image_id'],
                   'joints': {h: xy.tolist()
                              for h, xy in result['joints'].items()}}, f)
    return None


TASK = SegmentationTask


def check_graphcut(refiner, target: str, dataset=None) -> None:
  """Graph cut makes person masks from keypoints: refuses part maps and
  evaluation datasets without keypoints (one line)."""
  if refiner is None or refiner.method != 'superpixel_graphcut':
    return
  if target != 'mask':
    raise errors.ConfigError(
        'eval.refine=superpixel_graphcut makes person masks; this run '
        'predicts body parts (use eval.refine=crf)')
  if dataset is not None and dataset.skeleton is None:
    raise errors.ConfigError(
        'eval.refine=superpixel_graphcut is seeded from the people\'s '
        f'keypoints and {dataset.name} has none (use eval.refine=crf)')


def _joint_maps(out, head: str):
  """[B, h, w, K] maps whose per-channel argmax locates each joint.

  For the softmax head these are the joints' logits: the softmax
  probability of a joint is also lowered by its neighbours' logits, which
  pulls its argmax away from them (with logits made from ground-truth
  Gaussians, the mean error on 6 synthetic images grew from 0.78 to 1.11
  image pixels).
  """
  if head == 'regression':
    return out['joint_heatmaps']
  return out['joint_logits'][..., 1:]


def predict_segmentation(variables, batch, *, model, flip: bool,
                         class_flip_lut, joint_flip_permutation, dtype,
                         probs: bool = False):
  """Mask labels [B, h, w] and, per joint head, joints in image pixels;
  with `probs` also the class probabilities ``class_probs`` [B, h, w, C]
  (for refinement)."""
  images = images_lib.normalize(batch['image'], dtype)
  out = model.apply(variables, images, train=False)
  class_probs = jax.nn.softmax(out['mask_logits'], axis=-1)
  heads = [h for h, key in JOINT_OUTPUTS.items() if key in out]
  maps = {h: _joint_maps(out, h) for h in heads}
  if flip:
    mirrored = model.apply(variables, images[:, :, ::-1], train=False)
    back = jax.nn.softmax(mirrored['mask_logits'], axis=-1)[:, :, ::-1]
    class_probs = (class_probs + back[..., class_flip_lut]) / 2
    maps = {h: heatmap.flip_test_average(
        maps[h], _joint_maps(mirrored, h), joint_flip_permutation)
            for h in heads}
  result = {'labels': jnp.argmax(class_probs, -1).astype(jnp.uint8)}
  if probs:
    result['class_probs'] = class_probs
  for h in heads:
    coords, _ = heatmap.decode_heatmaps(maps[h], 'argmax')
    result[f'{h}_grid_xy'] = coords
    result[f'{h}_keypoints'] = heatmap.heatmap_to_image_coords(
        coords, batch['affine'])
  return result


def predict_function(model, skeleton, part_schema, flip: bool,
                     probs: bool = False):
  """`predict_segmentation` of one model: (variables, batch) -> dict.

  `part_schema` is the schema of part-map models (None for person masks)
  and `skeleton` that of the joint heads (None without them); the flip
  test swaps their left and right labels. `probs` adds the class
  probabilities.
  """
  lut = np.arange(model.num_classes)
  if part_schema is not None:
    lut = part_schema.flip_lut[:model.num_classes].astype(np.int32)
  perm = (skeleton.flip_permutation if skeleton is not None
          else np.zeros(0, np.int32))
  return functools.partial(predict_segmentation, model=model, flip=flip,
                           class_flip_lut=lut, joint_flip_permutation=perm,
                           dtype=model.dtype, probs=probs)


def make_predict_fn(model, skeleton, part_schema, flip: bool, mesh,
                    probs: bool = False):
  """`predict_function` jitted over the mesh."""
  return batched_prediction.jit_predict(
      predict_function(model, skeleton, part_schema, flip, probs), mesh)


class SegmentationEvaluator:
  """Runs a segmentation model over an evaluation split and scores it."""

  def __init__(self, dataset: example_lib.ImageDataset,
               input_cfg: ml_collections.ConfigDict,
               eval_cfg: ml_collections.ConfigDict,
               codec: heatmap.HeatmapCodec, *, model, mesh,
               batch_size: int, target: str = 'mask', workdir=None):
    # Checked first: a mistaken option fails before any data is read.
    self.refiner = refine_option.make(eval_cfg, mesh, workdir=workdir,
                                      skeleton=dataset.skeleton)
    check_graphcut(self.refiner, target, dataset)
    if input_cfg.mode != 'full_image':
      raise ValueError('segmentation models evaluate full images; set '
                       "input.mode='full_image'")
    if eval_cfg.boxes != 'gt':
      raise ValueError('segmentation models use no person boxes; leave '
                       "eval.boxes='gt'")
    self.dataset = dataset
    self.cfg = eval_cfg
    self.mesh = mesh
    self.target = target
    self.codec = codec
    self.results = None
    self.colors = None  # of the preview overlays: the schema's, if any
    if target == 'part_map':
      if dataset.part_schema is None:
        raise ValueError(f'{dataset.name} has no part maps to evaluate')
      self.class_names = dataset.part_schema.label_names
      self.colors = dataset.part_schema.colors
    else:
      self.class_names = ('background', 'person')
    self.num_classes = len(self.class_names)
    if model.num_classes != self.num_classes:
      raise errors.ConfigError(
          f'the model predicts {model.num_classes} classes, the {target} '
          f'labels of {dataset.name} have {self.num_classes}: set '
          f'--config.model.num_classes={self.num_classes}')
    self.heads = [h for h in JOINT_OUTPUTS
                  if getattr(model, 'joint_head', 'none') in (h, 'both')]
    self.batches, self.count = batched_prediction.eval_batches(
        dataset, input_cfg, batch_size, mesh)
    schema = dataset.part_schema if target == 'part_map' else None
    self.predict_fn = (
        make_predict_fn(model, dataset.skeleton, schema, eval_cfg.flip, mesh)
        if self.refiner is None else self.refiner.wrap(make_predict_fn(
            model, dataset.skeleton, schema, eval_cfg.flip, mesh,
            probs=True)))
    suffix = '_flip' if eval_cfg.flip else ''
    self.primary_metric = ('part_miou' if target == 'part_map'
                           else 'mask_dice') + suffix

  def _pck_name(self, head: str) -> str:
    return f'{head}_' + pck.metric_name(PCK_ALPHA, 'torso')

  def evaluate(self, variables) -> tuple[dict[str, float], list[np.ndarray]]:
    """Metrics over the split and preview overlays of the first images."""
    metrics, refined = (
        segmentation_metrics.SegmentationMetrics(self.num_classes,
                                                 self.class_names)
        for _ in range(2))
    keys = [self.target, 'person_valid', 'gt_keypoints']
    joints = {h: [] for h in self.heads}
    gt, previews = [], []
    tally = batched_prediction.ExampleTally()
    if self.refiner is not None:
      self.refiner.reset()
      keys += self.refiner.host_keys
    for host, global_batch in batched_prediction.host_predictions(
        self.batches, self.predict_fn, variables, self.mesh, keys, tally):
      metrics.add(host['labels'], host[self.target], host['valid'])
      if self.refiner is not None:
        host['labels'] = self.refiner.refined(
            host, _people_keypoints(host) if 'keypoints' in host else None)
        refined.add(host['labels'], host[self.target], host['valid'])
      one_person = host['valid'] & (host['person_valid'].sum(-1) == 1)
      gt.append(host['gt_keypoints'][one_person, 0])
      for h in self.heads:
        joints[h].append(host[f'{h}_keypoints'][one_person])
      if not previews:
        previews = self._previews(sharding.to_host(global_batch['image']),
                                  host)
    counts = tally.check(self.count, 'images')
    suffix = '_flip' if self.cfg.flip else ''
    out = {k + suffix: v for k, v in metrics.compute().items()}
    if self.refiner is not None:
      out = self.refiner.metrics(
          {k + suffix: v for k, v in refined.compute().items()}, out)
    gt = np.concatenate(gt)
    skeleton = self.dataset.skeleton
    for h in self.heads:
      if len(gt) and skeleton.torso is not None:
        out[self._pck_name(h) + suffix] = pck.pck_accuracy(
            np.concatenate(joints[h]), gt[..., :2], gt[..., 2] > 0,
            pck.torso_size(gt, skeleton), PCK_ALPHA).mean
    return {**{k: float(v) for k, v in out.items()}, **counts}, previews

  def _previews(self, images, host) -> list[np.ndarray]:
    n = min(self.cfg.num_preview_images, int(host['valid'].sum()))
    out = []
    for i in range(n):
      image = visualization.overlay_labels(images[i], host['labels'][i],
                                           colors=self.colors)
      for h in self.heads[:1]:
        xy = self.codec.grid_to_input(host[f'{h}_grid_xy'][i])
        kp = np.concatenate([xy, np.full((len(xy), 1), 2.0)], -1)
        image = visualization.draw_skeleton(image, kp, self.dataset.skeleton)
      out.append(image)
    return out


def _people_keypoints(host) -> np.ndarray:
  """[B, N, K, 3] keypoints on the mask grid, padding people unlabelled."""
  kp = host['keypoints'].copy()
  kp[..., 2] *= host['person_valid'][..., None]
  return kp


class SegmentationPredictor:
  """Masks or part maps, and the joints of the joint heads, per image."""

  def __init__(self, config, model, mesh, skeleton, part_schema, *,
               keypoint_threshold: float = 0.2, workdir=None):
    self.config, self.mesh, self.part_schema = config, mesh, part_schema
    self.refiner = refine_option.make(config.eval, mesh, workdir=workdir)
    check_graphcut(self.refiner,
                   'mask' if part_schema is None else 'part_map')
    self.skeleton = skeleton
    # Graph cut's people (``poses``) give their joints scoring above it.
    self.keypoint_threshold = keypoint_threshold
    self.predict_fn = make_predict_fn(model, skeleton, part_schema,
                                      config.eval.flip, mesh)
    if self.refiner is not None:
      self.predict_fn = self.refiner.wrap(make_predict_fn(
          model, skeleton, part_schema, config.eval.flip, mesh, probs=True))
    self.heads = [h for h in JOINT_OUTPUTS
                  if getattr(model, 'joint_head', 'none') in (h, 'both')]

  def _poses_skeleton(self, poses):
    """The skeleton of `poses`' people, by their joint count."""
    known = [s for s in (self.skeleton, *skeletons.SKELETONS.values())
             if s is not None]
    # A results file has one joint count (`coco.load_keypoint_results`).
    k = next((kp.shape[1] for kp, _ in poses.values()), known[0].num_joints)
    for candidate in known:
      if candidate.num_joints == k:
        return candidate
    raise example_lib.DatasetError(
        f'poses: people with {k} joints match no known skeleton '
        f'({", ".join(s.name for s in known)})')

  def _grid_keypoints(self, poses, image_id, affine, num_joints):
    """[N, K, 3] the people of `poses` in one image on the mask grid,
    joints at or below the keypoint threshold unlabelled."""
    kp = np.array(poses.get(image_id, (np.zeros((0, num_joints, 3)),))[0],
                  np.float64)
    xy = kp[..., :2] @ np.asarray(affine)[:, :2].T + np.asarray(affine)[:, 2]
    labelled = kp[..., 2] > self.keypoint_threshold
    return np.concatenate([xy, labelled[..., None] * 2.0], -1)

  def predict(self, variables, images, boxes=None, poses=None):
    del boxes
    refine = self.refiner.method if self.refiner is not None else ''
    keys = ()
    if refine == 'superpixel_graphcut':
      if poses is None:
        raise app.UsageError(
            'eval.refine=superpixel_graphcut is seeded from the people\'s '
            'keypoints: give them with --poses (COCO keypoint results)')
      poses_skeleton = self._poses_skeleton(poses)
      keys = ('image',)

    def result_of(ann, host, i):
      labels = host['labels'][i]
      if refine == 'crf':
        labels = host['refined_labels'][i]
      elif refine:
        kp = self._grid_keypoints(poses, ann['image_id'], host['affine'][i],
                                  poses_skeleton.num_joints)
        labels = self.refiner.graphcut(
            host['image'][i:i + 1], kp[None],
            host['person_probs'][i:i + 1], [True],
            skeleton=poses_skeleton)[0]
      labels = warp.labels_to_image(labels, host['affine'][i],
                                    (ann['height'], ann['width']))
      return {'image_id': ann['image_id'], 'label_images': {'labels': labels},
              'joints': {h: host[f'{h}_keypoints'][i] for h in self.heads},
              'part_schema': self.part_schema}

    return batched_prediction.predict_images(
        images, self.config.input, self.config.input.eval_batch_size,
        self.predict_fn, variables, self.mesh, result_of, keys)
