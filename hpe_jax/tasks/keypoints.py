"""Keypoints: single-person pose models (hourglass, CPM) on top-down crops.

Training: Gaussian heatmap targets made on the device by the heatmap codec
(``config.codec.sigma``), MSE per stack or stage, weighted by
``loss.stack_weights`` (intermediate supervision).

Evaluation: the jitted predict step runs the model (and, with the flip test, the model on
the mirrored crops), averages the flipped-back heatmaps, decodes them and maps
the coordinates back to the original images, all on the device. The host
collects the valid examples of the padded batches (every person exactly
once) and computes the metrics the dataset supports; names carry their
protocol:

* ``pck@0.2_torso``: PCK at 0.2 of the torso (LSP's protocol), when the
  skeleton defines a torso;
* ``pckh@0.5``: PCKh at half the head size, when the data has head boxes;
* ``oks_ap_gtbox`` ... ``oks_ar_large_gtbox`` (or ``_detbox`` with detected
  boxes): COCO OKS AP/AR through pycocotools, for COCO-format data;

each with ``_flip`` appended when the flip test is on. The first of these
that applies is the evaluator's `primary_metric`, used to keep the best
checkpoint.

Prediction: each person box (given, or the whole image) is cropped, run and
decoded as in evaluation; results are COCO keypoint results per image.
"""

from __future__ import annotations

import collections
import dataclasses
import functools

import ml_collections
import numpy as np

from hpe_jax import visualization
from hpe_jax.codecs import heatmap
from hpe_jax.data import coco
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons
from hpe_jax.evaluation import batched_prediction
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.evaluation import pck
from hpe_jax.ops import images as images_lib
from hpe_jax.runtime import sharding
from hpe_jax.tasks import base
from hpe_jax.training import losses

PCK_ALPHA = 0.2
PCKH_ALPHA = 0.5


@dataclasses.dataclass(frozen=True)
class KeypointTask(base.Task):
  """Heatmap regression with intermediate supervision."""

  serving_rows = 'boxes'
  serving_results = 'keypoints'

  @staticmethod
  def default_loss_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        stack_weights=(),  # per stack / stage; empty = 1 each
    ))

  def loss(self, outputs, batch):
    kp = batch['keypoints']
    target, weights = self.codec.encode(kp[..., :2], kp[..., 2],
                                        self.output_size)
    return losses.stacked_heatmap_loss(outputs['heatmaps'], target, weights,
                                       self.loss_cfg.stack_weights)

  def training_labels(self, config):
    del config
    return ('keypoints',)

  def make_evaluator(self, config, dataset, model, mesh):
    return KeypointEvaluator(
        dataset, config.input, config.eval, self.codec, model=model,
        mesh=mesh, batch_size=config.input.eval_batch_size,
        detections=base.load_detections(config, dataset))

  def protocol_suffix(self, config) -> str:
    boxes = 'gt' if config.eval.boxes == 'gt' else 'detected'
    return coco_keypoints.protocol_suffix_for(boxes, config.eval.flip)

  def make_predictor(self, config, model, mesh, skeleton, *,
                     min_score=0.3, keypoint_threshold=0.2):
    del min_score, keypoint_threshold
    return KeypointPredictor(config, self.codec, model, mesh, skeleton)

  def serving_function(self, config, model, skeleton, *, min_score=0.3):
    del min_score
    return predict_function(model, skeleton, self.codec, config.eval.flip), {}

  def draw(self, image, result, skeleton, threshold):
    people = result['people']
    if not people:
      return image
    kp = np.array([p['keypoints'] for p in people]).reshape(
        len(people), skeleton.num_joints, 3)
    return visualization.draw_skeleton(image, kp, skeleton,
                                       threshold=threshold, faint=True)


TASK = KeypointTask


def predict_keypoints(variables, batch, *, model, codec, flip_permutation,
                      flip: bool, dtype):
  """Keypoints [B, K, 2] in image pixels, scores [B, K], heatmap coords."""
  images = images_lib.normalize(batch['image'], dtype)
  heat = model.apply(variables, images, train=False)['heatmaps'][-1]
  if flip:
    mirrored = model.apply(variables, images[:, :, ::-1],
                           train=False)['heatmaps'][-1]
    heat = heatmap.flip_test_average(heat, mirrored, flip_permutation)
  coords, scores = codec.decode(heat)
  image_xy = heatmap.heatmap_to_image_coords(coords, batch['affine'])
  return dict(keypoints=image_xy, scores=scores, heatmap_xy=coords)


def predict_function(model, skeleton, codec, flip: bool):
  """`predict_keypoints` of one model: (variables, batch) -> dict."""
  return functools.partial(
      predict_keypoints, model=model, codec=codec,
      flip_permutation=skeleton.flip_permutation, flip=flip,
      dtype=model.dtype)


def make_predict_fn(model, skeleton, codec, flip: bool, mesh):
  """`predict_function` jitted over the mesh."""
  return batched_prediction.jit_predict(
      predict_function(model, skeleton, codec, flip), mesh)


class KeypointEvaluator:
  """Runs a keypoint model over an evaluation split and scores it."""

  def __init__(self, dataset: example_lib.ImageDataset,
               input_cfg: ml_collections.ConfigDict,
               eval_cfg: ml_collections.ConfigDict,
               codec: heatmap.HeatmapCodec, *, model, mesh,
               batch_size: int, detections=None, predict_fn=None):
    if dataset.skeleton is None:
      raise ValueError(f'{dataset.name} has no keypoints to evaluate')
    self.dataset = dataset
    self.cfg = eval_cfg
    self.mesh = mesh
    self.codec = codec
    self.boxes = 'gt' if detections is None else 'detected'
    self.batches, self.count = batched_prediction.eval_batches(
        dataset, input_cfg, batch_size, mesh, detections)
    self.predict_fn = predict_fn or make_predict_fn(
        model, dataset.skeleton, codec, eval_cfg.flip, mesh)
    self.metric_names = self._metric_names()
    self.results = None
    self.counts = {}  # damaged_examples of the last pass

  def _metric_names(self) -> list[str]:
    s = base.flip_suffix(self.cfg.flip)
    names = []
    if self.dataset.skeleton.torso is not None and self.boxes == 'gt':
      names.append(pck.metric_name(PCK_ALPHA, 'torso') + s)
    if self.boxes == 'gt' and (self._has_head_boxes() or
                               self.dataset.skeleton.head is not None):
      names.append(pck.metric_name(PCKH_ALPHA, 'head') + s)
    if hasattr(self.dataset, 'coco'):
      suffix = coco_keypoints.protocol_suffix_for(self.boxes, self.cfg.flip)
      names += [n + suffix for n in coco_keypoints.METRIC_NAMES]
    return names

  def _has_head_boxes(self) -> bool:
    for i in range(min(len(self.dataset), 16)):
      if np.isfinite(self.dataset.annotation(i)['head_boxes']).any():
        return True
    return False

  @property
  def primary_metric(self) -> str:
    return self.metric_names[0]

  def predict(self, variables):
    """Predictions and labels of every valid example, gathered on the host.

    Returns:
      (dict of numpy arrays over the valid examples, preview images).
    """
    keys = ('image_id', 'person_index', 'gt_keypoints', 'box', 'head_box',
            'score', 'valid')
    collected, previews = [], []
    tally = batched_prediction.ExampleTally()
    for host, global_batch in batched_prediction.host_predictions(
        self.batches, self.predict_fn, variables, self.mesh, keys, tally):
      if not previews:
        previews = self._previews(sharding.to_host(global_batch['image']),
                                  host)
      collected.append(host)
    merged = {k: np.concatenate([c[k] for c in collected])
              for k in collected[0]}
    valid = merged.pop('valid')
    result = {k: v[valid] for k, v in merged.items()}
    self.counts = tally.check(self.count, 'examples')
    return result, previews

  def _previews(self, images, host) -> list[np.ndarray]:
    n = min(self.cfg.num_preview_images, int(host['valid'].sum()))
    xy = self.codec.grid_to_input(host['heatmap_xy'][:n])
    kp = np.concatenate([xy, np.full(xy.shape[:-1] + (1,), 2.0)], -1)
    return [visualization.draw_skeleton(images[i], kp[i],
                                        self.dataset.skeleton)
            for i in range(n)]

  def metrics(self, pred, results) -> dict[str, float]:
    """The metrics of `metric_names` for predictions from `predict` and
    their COCO `results`."""
    s = base.flip_suffix(self.cfg.flip)
    gt = pred['gt_keypoints']
    labelled = gt[..., 2] > 0
    out = {}
    skeleton = self.dataset.skeleton
    normalizers = {}
    if self.boxes == 'gt' and skeleton.torso is not None:
      normalizers['torso'] = (PCK_ALPHA, pck.torso_size(gt, skeleton))
    if self.boxes == 'gt' and np.isfinite(pred['head_box']).any():
      normalizers['head'] = (PCKH_ALPHA, pck.head_size(pred['head_box']))
    elif self.boxes == 'gt' and skeleton.head is not None:
      normalizers['head'] = (PCKH_ALPHA,
                             pck.head_size_from_joints(gt, skeleton))
    for name, (alpha, size) in normalizers.items():
      # Per joint too, as '<metric><flip suffix>/<joint>'.
      for key, value in pck.pck_metrics(
          pred['keypoints'], gt[..., :2], labelled, size, alpha=alpha,
          normalizer_name=name, joint_names=skeleton.joint_names).items():
        if key != 'epe':
          metric, _, joint = key.partition('/')
          out[metric + s + ('/' + joint if joint else '')] = value
    if hasattr(self.dataset, 'coco'):
      out.update(coco_keypoints.evaluate_keypoints(
          self.dataset.coco, results,
          coco_keypoints.protocol_suffix_for(self.boxes, self.cfg.flip)))
    return {k: float(v) for k, v in out.items()}

  def results_of(self, pred) -> list[dict]:
    """COCO keypoint results of predictions from `predict`."""
    scores = pred['scores']
    keypoints = np.concatenate([pred['keypoints'], scores[..., None]], -1)
    # mmpose's instance score: box score times the mean joint confidence.
    results = coco.keypoint_results(
        pred['image_id'], keypoints, pred['score'] * scores.mean(-1))
    return (pose_nms(results, self.dataset.skeleton)
            if self.boxes == 'detected' else results)

  def evaluate(self, variables) -> tuple[dict[str, float], list[np.ndarray]]:
    pred, previews = self.predict(variables)
    self.results = self.results_of(pred)
    return {**self.metrics(pred, self.results), **self.counts}, previews


def pose_nms(results: list[dict], skeleton: skeletons.Skeleton) -> list[dict]:
  """OKS-NMS per image, removing duplicate poses of overlapping boxes.

  A skeleton without OKS sigmas (LSP, MPII, your own) uses COCO's mean
  sigma for every joint (`coco_keypoints.sigmas_or_mean`): without one
  every pose but the best of an image was dropped.
  """
  sigmas = coco_keypoints.sigmas_or_mean(skeleton.oks_sigmas,
                                        skeleton.num_joints)
  kept = []
  by_image: dict[int, list] = {}
  for r in results:
    by_image.setdefault(r['image_id'], []).append(r)
  for rs in by_image.values():
    kp = np.array([r['keypoints'] for r in rs]).reshape(len(rs), -1, 3)
    extent = kp[..., :2].max(1) - kp[..., :2].min(1)
    keep = coco_keypoints.oks_nms(kp, np.array([r['score'] for r in rs]),
                                  extent.prod(-1), sigmas, 0.9)
    kept += [rs[i] for i in keep]
  return kept


def whole_image_boxes(images: example_lib.ImageDataset):
  """One box covering each whole image (pixel edges), score 1."""
  boxes = {}
  for i in range(len(images)):
    ann = images.annotation(i)
    box = example_lib.image_box(ann['height'], ann['width'])
    boxes[ann['image_id']] = (box[None], np.ones(1, np.float32))
  return boxes


class KeypointPredictor:
  """Poses of the people in given boxes (default: each whole image)."""

  def __init__(self, config, codec, model, mesh, skeleton):
    self.config, self.codec, self.model, self.mesh = config, codec, model, mesh
    # Jitted once: every call with the same shapes reuses its compilation.
    self.predict_fn = make_predict_fn(model, skeleton, codec,
                                      config.eval.flip, mesh)

  def predict(self, variables, images, boxes=None, poses=None):
    del poses
    evaluator = KeypointEvaluator(
        images, self.config.input, self.config.eval, self.codec,
        model=self.model, mesh=self.mesh,
        batch_size=self.config.input.eval_batch_size,
        detections=whole_image_boxes(images) if boxes is None else boxes,
        predict_fn=self.predict_fn)
    by_image = collections.defaultdict(list)
    for r in evaluator.results_of(evaluator.predict(variables)[0]):
      by_image[r['image_id']].append(r)
    return [{'image_id': image_id, 'people': by_image[image_id]}
            for image_id in (images.annotation(i)['image_id']
                             for i in range(len(images)))]
