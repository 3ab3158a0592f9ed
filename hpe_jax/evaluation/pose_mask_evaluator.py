"""Evaluation of the pose-conditioned person-mask network.

Every ground-truth person of the evaluation split is cropped like in
training and given its labelled keypoints (the network needs a pose, so
detected boxes do not apply); the model's
output above 0 is the predicted mask, compared with the person's mask on
the crop grid by `segmentation_metrics.SegmentationMetrics`:
``mask_iou`` (mean over people, the design's score), ``mask_dice``,
the pooled variants and ``pixel_accuracy``. The skeleton prior alone (above
0.5) is scored too, as ``prior/mask_iou`` etc., so every evaluation shows
what the network adds to it. The primary metric is ``mask_iou``.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections
import numpy as np

from hpe_jax import visualization
from hpe_jax.data import example as example_lib
from hpe_jax.evaluation import batched_prediction
from hpe_jax.evaluation import segmentation_metrics
from hpe_jax.ops import images as images_lib
from hpe_jax.training import sharding


def predict_mask(variables, batch, *, model, dtype):
  """Predicted and prior masks [B, h, w] (uint8 0/1) of person crops."""
  out = model.apply(variables, images_lib.normalize(batch['image'], dtype),
                    batch['keypoints'], train=False)
  return {'labels': (out['mask'] > 0).astype(jnp.uint8),
          'prior_labels': (out['prior'] > 0.5).astype(jnp.uint8)}


def make_predict_fn(model, mesh):
  """`predict_mask` jitted over the mesh: (variables, batch) -> dict."""
  return batched_prediction.jit_predict(
      functools.partial(predict_mask, model=model, dtype=model.dtype), mesh)


class PoseMaskEvaluator:
  """Scores the person masks of a pose-conditioned model (see above)."""

  def __init__(self, dataset: example_lib.ImageDataset,
               input_cfg: ml_collections.ConfigDict,
               eval_cfg: ml_collections.ConfigDict, *, model, mesh,
               batch_size: int, detections=None):
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
    self.predict_fn = make_predict_fn(model, mesh)
    self.primary_metric = 'mask_iou'

  def evaluate(self, variables) -> tuple[dict[str, float], list[np.ndarray]]:
    """Metrics over the split and preview overlays of the first people."""
    model = segmentation_metrics.SegmentationMetrics(2)
    prior = segmentation_metrics.SegmentationMetrics(2)
    previews, seen = [], 0
    for host, global_batch in batched_prediction.host_predictions(
        self.batches, self.predict_fn, variables, self.mesh,
        ('mask', 'valid', 'keypoints')):
      model.add(host['labels'], host['mask'], host['valid'])
      prior.add(host['prior_labels'], host['mask'], host['valid'])
      seen += int(host['valid'].sum())
      if not previews:
        previews = self._previews(sharding.to_host(global_batch['image']),
                                  host)
    batched_prediction.check_all_seen(seen, self.count, 'people')
    out = model.compute()
    out.update({f'prior/{k}': v for k, v in prior.compute().items()})
    return {k: float(v) for k, v in out.items()}, previews

  def _previews(self, images, host) -> list[np.ndarray]:
    n = min(self.cfg.num_preview_images, int(host['valid'].sum()))
    return [visualization.draw_skeleton(
        visualization.overlay_labels(images[i], host['labels'][i]),
        host['keypoints'][i], self.dataset.skeleton) for i in range(n)]
