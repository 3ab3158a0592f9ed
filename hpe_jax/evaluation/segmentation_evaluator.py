"""Evaluation of the full-image segmentation models (U-Net, harmonic U-Net).

The jitted predict step runs the model (with the flip test, also on the
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
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hpe_jax import visualization
from hpe_jax.data import example as example_lib
from hpe_jax.evaluation import batched_prediction
from hpe_jax.evaluation import pck
from hpe_jax.evaluation import segmentation_metrics
from hpe_jax.ops import heatmap_decoding
from hpe_jax.ops import images as images_lib
from hpe_jax.training import sharding

PCK_ALPHA = 0.2
JOINT_OUTPUTS = {'regression': 'joint_heatmaps', 'softmax': 'joint_logits'}


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
                         class_flip_lut, joint_flip_permutation, dtype):
  """Mask labels [B, h, w] and, per joint head, joints in image pixels."""
  images = images_lib.normalize(batch['image'], dtype)
  out = model.apply(variables, images, train=False)
  probs = jax.nn.softmax(out['mask_logits'], axis=-1)
  heads = [h for h, key in JOINT_OUTPUTS.items() if key in out]
  maps = {h: _joint_maps(out, h) for h in heads}
  if flip:
    mirrored = model.apply(variables, images[:, :, ::-1], train=False)
    back = jax.nn.softmax(mirrored['mask_logits'], axis=-1)[:, :, ::-1]
    probs = (probs + back[..., class_flip_lut]) / 2
    maps = {h: heatmap_decoding.flip_test_average(
        maps[h], _joint_maps(mirrored, h), joint_flip_permutation)
            for h in heads}
  result = {'labels': jnp.argmax(probs, -1).astype(jnp.uint8)}
  for h in heads:
    coords, _ = heatmap_decoding.decode_heatmaps(maps[h], 'argmax')
    result[f'{h}_grid_xy'] = coords
    result[f'{h}_keypoints'] = heatmap_decoding.heatmap_to_image_coords(
        coords, batch['affine'])
  return result


def make_predict_fn(model, skeleton, part_schema, flip: bool, mesh):
  """`predict_segmentation` jitted over the mesh.

  `part_schema` is the schema of part-map models (None for person masks)
  and `skeleton` that of the joint heads (None without them); the flip
  test swaps their left and right labels.
  """
  lut = np.arange(model.num_classes)
  if part_schema is not None:
    lut = part_schema.flip_lut[:model.num_classes].astype(np.int32)
  perm = (skeleton.flip_permutation if skeleton is not None
          else np.zeros(0, np.int32))
  return batched_prediction.jit_predict(
      functools.partial(predict_segmentation, model=model, flip=flip,
                        class_flip_lut=lut, joint_flip_permutation=perm,
                        dtype=model.dtype), mesh)


class SegmentationEvaluator:
  """Runs a segmentation model over an evaluation split and scores it."""

  def __init__(self, dataset: example_lib.ImageDataset,
               input_cfg: ml_collections.ConfigDict,
               eval_cfg: ml_collections.ConfigDict, *, model, mesh,
               batch_size: int, target: str = 'mask'):
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
    self.stride = input_cfg.output_stride
    if target == 'part_map':
      if dataset.part_schema is None:
        raise ValueError(f'{dataset.name} has no part maps to evaluate')
      self.class_names = dataset.part_schema.label_names
    else:
      self.class_names = ('background', 'person')
    self.num_classes = len(self.class_names)
    if model.num_classes != self.num_classes:
      raise ValueError(f'the model predicts {model.num_classes} classes, '
                       f'the {target} labels of {dataset.name} have '
                       f'{self.num_classes}')
    self.heads = [h for h in JOINT_OUTPUTS
                  if getattr(model, 'joint_head', 'none') in (h, 'both')]
    self.batches, self.count = batched_prediction.eval_batches(
        dataset, input_cfg, batch_size, mesh)
    self.predict_fn = make_predict_fn(
        model, dataset.skeleton,
        dataset.part_schema if target == 'part_map' else None,
        eval_cfg.flip, mesh)
    suffix = '_flip' if eval_cfg.flip else ''
    self.primary_metric = ('part_miou' if target == 'part_map'
                           else 'mask_dice') + suffix

  def _pck_name(self, head: str) -> str:
    return f'{head}_' + pck.metric_name(PCK_ALPHA, 'torso')

  def evaluate(self, variables) -> tuple[dict[str, float], list[np.ndarray]]:
    """Metrics over the split and preview overlays of the first images."""
    metrics = segmentation_metrics.SegmentationMetrics(self.num_classes,
                                                       self.class_names)
    keys = [self.target, 'valid', 'person_valid', 'gt_keypoints']
    joints = {h: [] for h in self.heads}
    gt, previews, seen = [], [], 0
    for host, global_batch in batched_prediction.host_predictions(
        self.batches, self.predict_fn, variables, self.mesh, keys):
      metrics.add(host['labels'], host[self.target], host['valid'])
      seen += int(host['valid'].sum())
      one_person = host['valid'] & (host['person_valid'].sum(-1) == 1)
      gt.append(host['gt_keypoints'][one_person, 0])
      for h in self.heads:
        joints[h].append(host[f'{h}_keypoints'][one_person])
      if not previews:
        previews = self._previews(sharding.to_host(global_batch['image']),
                                  host)
    batched_prediction.check_all_seen(seen, self.count, 'images')
    out = metrics.compute()
    gt = np.concatenate(gt)
    skeleton = self.dataset.skeleton
    for h in self.heads:
      if len(gt) and skeleton.torso is not None:
        out[self._pck_name(h)] = pck.pck_accuracy(
            np.concatenate(joints[h]), gt[..., :2], gt[..., 2] > 0,
            pck.torso_size(gt, skeleton), PCK_ALPHA).mean
    suffix = '_flip' if self.cfg.flip else ''
    return {k + suffix: float(v) for k, v in out.items()}, previews

  def _previews(self, images, host) -> list[np.ndarray]:
    n = min(self.cfg.num_preview_images, int(host['valid'].sum()))
    out = []
    for i in range(n):
      image = visualization.overlay_labels(images[i], host['labels'][i])
      for h in self.heads[:1]:
        xy = (host[f'{h}_grid_xy'][i] + 0.5) * self.stride - 0.5
        kp = np.concatenate([xy, np.full((len(xy), 1), 2.0)], -1)
        image = visualization.draw_skeleton(image, kp, self.dataset.skeleton)
      out.append(image)
    return out
