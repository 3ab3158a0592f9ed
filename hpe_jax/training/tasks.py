"""What a model is trained to do: its inputs, targets and weighted loss.

``config.task`` names one of:

* ``keypoints``: pose models (hourglass, CPM) on top-down crops; Gaussian
  heatmap targets made on the device, per-stack MSE.
* ``segmentation``: U-Net and harmonic U-Net on full images; soft Dice
  and/or cross-entropy on the mask (person or body parts), plus the joint
  heads of the multi-task U-Nets: heatmap regression (MSE on targets scaled
  by ``joint_regression_scale``) and a per-pixel softmax over background +
  joints (cross-entropy on hard or Gaussian soft targets).
* ``pose_mask``: the pose-conditioned person-mask network on top-down crops;
  the model also takes the person's keypoints; MSE (or BCE) of its tanh
  output against the person mask mapped to -1 / +1.
* ``part_rcnn``: the multi-person detector + RoI head on full images; the
  model also takes the ground-truth boxes (its RoIs in training). CenterNet
  focal loss on the centre heatmap and L1 on log box sizes and centre
  offsets; per RoI, sigmoid cross-entropy of the whole-body channel, a
  softmax cross-entropy over the 6 part channels inside the body (of that
  RoI's person) and Mask R-CNN's spatial cross-entropy of the keypoints.

A task object is static under ``jax.jit``: `model_inputs` picks and
normalises what the model takes from a batch, `loss` returns the total and
its named parts (logged as ``train/loss/<part>``). Its loss settings live in
``config.loss``, whose fields depend on the task (`default_loss_config`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import ml_collections
import optax

from hpe_jax.data import skeletons
from hpe_jax.ops import center_detection
from hpe_jax.ops import heatmaps
from hpe_jax.ops import images as images_lib
from hpe_jax.ops import roi_align
from hpe_jax.training import losses

TASKS = ('keypoints', 'segmentation', 'pose_mask', 'part_rcnn')
MASK_TARGETS = ('mask', 'part_map')
SOFTMAX_TARGETS = ('hard', 'gaussian')
POSE_MASK_LOSSES = ('mse', 'bce')


def default_loss_config(task: str) -> ml_collections.ConfigDict:
  """Every loss field of `task` with its default."""
  if task == 'keypoints':
    fields = dict(
        sigma=2.0,  # heatmap Gaussian sigma, in output pixels
        stack_weights=(),  # per stack / stage; empty = 1 each
    )
  elif task == 'segmentation':
    fields = dict(
        mask_target='mask',  # 'mask' (person) or 'part_map' (body parts)
        dice_weight=1.0,  # soft Dice on the mask softmax
        ce_weight=0.0,  # cross-entropy on the mask softmax
        sigma=2.0,  # joint Gaussians, in output pixels
        joint_regression_weight=1e-3,
        joint_regression_scale=100.0,  # heatmap targets are multiplied
        joint_softmax_weight=1.0,
        joint_softmax_target='hard',  # or 'gaussian' (soft targets)
    )
  elif task == 'pose_mask':
    fields = dict(name='mse')  # or 'bce'
  elif task == 'part_rcnn':
    fields = dict(
        center_weight=1.0,  # focal loss on the centre heatmap
        size_weight=1.0,  # L1 on log box width and height
        offset_weight=1.0,  # L1 on the centre's sub-cell offset
        body_weight=1.0,  # sigmoid cross-entropy of the whole-body mask
        parts_weight=1.0,  # softmax cross-entropy of the parts in the body
        keypoint_weight=0.5,  # spatial cross-entropy per joint
        keypoint_sigma=2.0,  # target Gaussians, in cells of a 56 grid
    )
  else:
    raise ValueError(f'task must be one of {TASKS}, got {task!r}')
  return ml_collections.ConfigDict(fields)


def _check(value, allowed, what):
  if value not in allowed:
    raise ValueError(f'{what} must be one of {allowed}, got {value!r}')


@dataclasses.dataclass(frozen=True)
class _ImageTask:
  """A task whose model takes the normalised images only."""
  loss_cfg: Any
  output_size: tuple[int, int]

  def model_inputs(self, batch, dtype) -> dict:
    return {'images': images_lib.normalize(batch['image'], dtype)}

  def init_inputs(self, image_size, num_joints, dtype) -> dict:
    """Inputs of batch size 1 for `model.init`."""
    del num_joints
    return {'images': jnp.zeros((1, *image_size, 3), dtype)}


@dataclasses.dataclass(frozen=True)
class KeypointTask(_ImageTask):
  """Heatmap regression with intermediate supervision."""

  def loss(self, outputs, batch):
    kp = batch['keypoints']
    target, weights = heatmaps.heatmap_targets(
        kp[..., :2], kp[..., 2], self.output_size, self.loss_cfg.sigma)
    return losses.stacked_heatmap_loss(outputs['heatmaps'], target, weights,
                                       self.loss_cfg.stack_weights)


@dataclasses.dataclass(frozen=True)
class SegmentationTask(_ImageTask):
  """Mask (person or parts) with optional joint heads, on full images."""

  def __post_init__(self):
    _check(self.loss_cfg.mask_target, MASK_TARGETS, 'loss.mask_target')
    _check(self.loss_cfg.joint_softmax_target, SOFTMAX_TARGETS,
           'loss.joint_softmax_target')

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
      maps, weights = heatmaps.people_heatmaps(
          kp, batch['person_valid'], self.output_size, cfg.sigma)
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
          target = heatmaps.joint_label_targets(maps, soft=True)
          ce = losses.soft_target_cross_entropy(logits, target, pixel_weight)
        else:
          target = heatmaps.joint_label_targets(maps, soft=False)
          target = jnp.where(pixel_weight > 0, target,
                             skeletons.IGNORE_LABEL)
          ce = losses.softmax_cross_entropy(logits, target)
        parts['joint_softmax'] = ce
        total += cfg.joint_softmax_weight * ce
    return total, parts


@dataclasses.dataclass(frozen=True)
class PoseMaskTask(_ImageTask):
  """Person mask from an image crop and that person's keypoints."""

  def __post_init__(self):
    _check(self.loss_cfg.name, POSE_MASK_LOSSES, 'loss.name')

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


@dataclasses.dataclass(frozen=True)
class PartRCNNTask(_ImageTask):
  """Detection plus per-person part masks and keypoints, on full images.

  Targets come from the full-image sample at output stride 1: ``boxes`` and
  ``person_valid`` for the detector; for RoI r (person slot r, jittered
  box) the crops of ``instance_map`` == r + 1 (whole body) and of
  ``part_map`` within it, and that person's ``keypoints`` on the RoI grid.
  Pixels of unknown label are left out, as are part labels of data without
  part maps (COCO-format masks train the body channel only).
  """

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
    t = center_detection.center_targets(boxes, valid, heat.shape[1:],
                                        stride)
    count = t['weight'].sum()
    weight = t['weight'][..., None]

    def l1(name, target):
      pred = center_detection.gather_cells(outputs[name], t['index'])
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
    kp = batch['keypoints'][:, :r]
    origin = rois[:, :, None, :2]
    size = jnp.maximum(rois[:, :, None, 2:] - origin, 1e-3)
    grid_xy = (kp[..., :2] + 0.5 - origin) / size * m - 0.5
    sigma = self.loss_cfg.keypoint_sigma * m / 56
    maps, kp_weights = heatmaps.heatmap_targets(grid_xy, kp[..., 2], (m, m),
                                                sigma)
    keypoints = losses.spatial_cross_entropy(
        outputs['keypoint_logits'], maps, kp_weights * roi_valid[..., None])
    return {'body': body_loss, 'parts': part_loss, 'keypoint': keypoints}


_TASK_CLASSES = {'keypoints': KeypointTask, 'segmentation': SegmentationTask,
                 'pose_mask': PoseMaskTask, 'part_rcnn': PartRCNNTask}


def make_task(config: ml_collections.ConfigDict, output_size):
  """The task object of a training config (``config.task``)."""
  _check(config.task, TASKS, 'task')
  return _TASK_CLASSES[config.task](config.loss, tuple(output_size))

