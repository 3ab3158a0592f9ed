r"""GrabCut seeded from the skeleton: a classical person-mask baseline.

The pose-conditioned mask network is given an image crop and one person's
keypoints and predicts that person's mask. This module answers how far a
classical method gets with the same inputs: OpenCV's GrabCut, its initial
labels drawn from the skeleton.

Seeding rule. The skeleton's centre lines, every limb whose two joints are
labelled and every labelled joint, are drawn one pixel wide; ``d`` is a
pixel's Euclidean distance to the nearest drawn pixel
(`cv2.distanceTransform`), so each zone is a tube around the limbs with round
ends, a disc around each joint:

* sure foreground: ``d <= fg_thickness / 2``, limbs ``fg_thickness`` wide;
* probable foreground: ``fg_thickness / 2 < d <= bg_distance / 2``;
* probable background: ``bg_distance / 2 < d <= bg_distance``;
* sure background: ``d > bg_distance``.

Both sizes default to fractions of the person's scale, the diagonal of the
box around the labelled joints: ``fg_thickness = max(1, 0.03 * diagonal)``,
thinner than a forearm so that the sure foreground stays inside the body,
and ``bg_distance = max(2, 0.15 * diagonal)``, about how far hands,
feet, the top of the head and the torso's sides reach past the skeleton.
On the synthetic evaluation split and the 12 people of the COCO test
fixture, of bg_distance fractions from 0.08 to 0.4, 0.08-0.1 gave the best
mean IoU and 0.15 came within 0.03 (wider margins let GrabCut leak into the
background); 0.15 is kept as the cautious choice for real clothes and hair.
The thickness barely mattered at 0.02-0.06. A partly labelled person has a
smaller diagonal, and its unlabelled limbs can fall in the sure background.

The "seed" mask, the sure plus probable foreground, is scored as a second,
GrabCut-free baseline.

On a top-down evaluation split, built and cropped exactly as for training::

  python -m hpe_jax.evaluation.grabcut_baseline \
      --config=configs/X.py[:args] [--config.key=value ...] \
      [--max_examples=N] [--output=metrics.json]

It prints `SegmentationMetrics` names (``mask_iou``, ``mask_dice``, ...) for
GrabCut and the same names prefixed ``seed/`` for the seed, on the mask grid
(the image is resized to it when ``config.input.output_stride > 1``).
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import app
from absl import flags
import cv2
import ml_collections
from ml_collections import config_flags
import numpy as np

from hpe_jax import cli
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.data import skeletons
from hpe_jax.evaluation import segmentation_metrics

FG_THICKNESS_FRACTION = 0.03
BG_DISTANCE_FRACTION = 0.15

# cv2 draws with this many fractional bits: sub-pixel joint positions.
_SHIFT = 4


@dataclasses.dataclass(frozen=True)
class GrabCutResult:
  """GrabCut's mask of one person and the seed it started from.

  Attributes:
    mask: uint8 [h, w] 0/1 foreground after GrabCut (the seed if it failed).
    seed: uint8 [h, w] 0/1 sure plus probable foreground of the seed.
    fell_back: whether GrabCut failed and `mask` is the seed.
  """
  mask: np.ndarray
  seed: np.ndarray
  fell_back: bool


def labelled_limbs(keypoints, skeleton: skeletons.Skeleton) -> np.ndarray:
  """[L, 2] the limbs of a person's [K, 3] keypoints with both joints
  labelled."""
  labelled = np.asarray(keypoints)[:, 2] > 0
  limbs = skeleton.limb_indices
  return limbs[labelled[limbs[:, 0]] & labelled[limbs[:, 1]]]


def joint_diagonal(keypoints) -> float:
  """The diagonal of the box around a person's labelled joints (the
  person's scale; 0 with none labelled)."""
  kp = np.asarray(keypoints, np.float64)
  xy = kp[kp[:, 2] > 0, :2]
  return float(np.linalg.norm(xy.max(0) - xy.min(0))) if len(xy) else 0.0


def default_sizes(keypoints) -> tuple[float, float]:
  """(fg_thickness, bg_distance) in pixels for a person's [K, 3] keypoints."""
  diagonal = joint_diagonal(keypoints)
  return (max(1.0, FG_THICKNESS_FRACTION * diagonal),
          max(2.0, BG_DISTANCE_FRACTION * diagonal))


def seed_labels(shape, keypoints, skeleton: skeletons.Skeleton, *,
                fg_thickness: float, bg_distance: float) -> np.ndarray:
  """GrabCut's initial labels (``cv2.GC_*``) by the module docstring's rule.

  Args:
    shape: (h, w) of the image.
    keypoints: [K, 3] x, y in pixel-index coordinates of the image, and
      visibility (0 unlabelled).
    skeleton: gives the limbs.
    fg_thickness: width of the sure-foreground limbs in pixels.
    bg_distance: distance from the skeleton beyond which pixels are sure
      background.

  Returns:
    uint8 [h, w] labels; all sure background when nothing labelled is drawn
    on the image.
  """
  kp = np.asarray(keypoints, np.float64)
  # cv2.distanceTransform measures the distance to the nearest zero pixel.
  off_skeleton = np.ones(shape, np.uint8)
  points = np.round(kp[:, :2] * (1 << _SHIFT)).astype(np.int64).tolist()
  for a, b in labelled_limbs(kp, skeleton):
    cv2.line(off_skeleton, points[a], points[b], 0, 1, cv2.LINE_8, _SHIFT)
  for j in np.flatnonzero(kp[:, 2] > 0):
    # A zero-length line is the joint's pixel, clipped like the limbs.
    cv2.line(off_skeleton, points[j], points[j], 0, 1, cv2.LINE_8, _SHIFT)
  labels = np.full(shape, cv2.GC_BGD, np.uint8)
  if off_skeleton.all():
    return labels
  distance = cv2.distanceTransform(off_skeleton, cv2.DIST_L2,
                                   cv2.DIST_MASK_PRECISE)
  labels[distance <= bg_distance] = cv2.GC_PR_BGD
  labels[distance <= bg_distance / 2] = cv2.GC_PR_FGD
  labels[distance <= fg_thickness / 2] = cv2.GC_FGD
  return labels


def _foreground(labels: np.ndarray) -> np.ndarray:
  return ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)).astype(np.uint8)


def grabcut(image, keypoints, skeleton: skeletons.Skeleton, *,
            fg_thickness: float | None = None,
            bg_distance: float | None = None,
            iterations: int = 5) -> GrabCutResult:
  """Runs GrabCut from the skeleton seed (see the module docstring).

  Args:
    image: uint8 [h, w, 3].
    keypoints: [K, 3] on the image's pixel grid, visibility 0 unlabelled.
    skeleton: gives the limbs.
    fg_thickness: limb width in pixels; None: from the person's scale.
    bg_distance: sure-background distance in pixels; None: from the scale.
    iterations: GrabCut iterations.

  Returns:
    A `GrabCutResult`; all zeros when no limb is labelled.
  """
  if not len(labelled_limbs(keypoints, skeleton)):
    empty = np.zeros(image.shape[:2], np.uint8)
    return GrabCutResult(empty, empty, fell_back=False)
  default_thickness, default_distance = default_sizes(keypoints)
  labels = seed_labels(
      image.shape[:2], keypoints, skeleton,
      fg_thickness=(default_thickness if fg_thickness is None else
                    fg_thickness),
      bg_distance=default_distance if bg_distance is None else bg_distance)
  seed = _foreground(labels)
  background_model = np.zeros((1, 65), np.float64)
  foreground_model = np.zeros((1, 65), np.float64)
  # GrabCut's k-means draws from OpenCV's global generator; reseeding makes
  # each crop's mask independent of what ran before.
  cv2.setRNGSeed(0)
  try:
    cv2.grabCut(np.ascontiguousarray(image, np.uint8), labels, None,
                background_model, foreground_model, iterations,
                cv2.GC_INIT_WITH_MASK)
  except cv2.error:
    # Raised when a colour model has too few pixels to fit, e.g. a person
    # filling the crop leaves no background.
    return GrabCutResult(seed, seed, fell_back=True)
  return GrabCutResult(_foreground(labels), seed, fell_back=False)


def evaluate(config: ml_collections.ConfigDict, max_examples: int = 0,
             iterations: int = 5) -> dict:
  """GrabCut and seed metrics on the evaluation split of `config`.

  Args:
    config: a training config; its ``dataset`` and ``input`` are used.
    max_examples: stop after this many crops (0: all).
    iterations: GrabCut iterations.

  Returns:
    ``{'dataset', 'examples', 'fallbacks', 'metrics'}``: the number of crops
    run, how many of them fell back to the seed, and the metrics.
  """
  skeleton = datasets.skeleton(config.dataset)
  if skeleton is None:
    raise ValueError(f'dataset {config.dataset.name!r} has no keypoints')
  dataset = datasets.build(config.dataset, 'eval')
  if not dataset.has_masks:
    raise ValueError(f'dataset {config.dataset.name!r} has no person masks')
  batches, _ = pipeline.eval_dataset(
      dataset, config.input, batch_size=config.input.eval_batch_size)
  grabcut_metrics = segmentation_metrics.SegmentationMetrics(2)
  seed_metrics = segmentation_metrics.SegmentationMetrics(2)
  examples = fallbacks = 0
  for batch in batches:
    masks = batch['mask']
    use = np.asarray(batch['valid'], bool).copy()
    if max_examples:
      use &= np.cumsum(use) <= max_examples - examples
    pred = np.zeros_like(masks)
    seed = np.zeros_like(masks)
    for i in np.flatnonzero(use):
      image = batch['image'][i]
      h, w = masks.shape[1:]
      if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
      result = grabcut(image, batch['keypoints'][i], skeleton,
                       iterations=iterations)
      pred[i], seed[i] = result.mask, result.seed
      fallbacks += result.fell_back
    grabcut_metrics.add(pred, masks, use)
    seed_metrics.add(seed, masks, use)
    examples += int(use.sum())
    if max_examples and examples >= max_examples:
      break
  metrics = grabcut_metrics.compute()
  metrics.update({f'seed/{k}': v for k, v in seed_metrics.compute().items()})
  return dict(dataset=config.dataset.name, examples=examples,
              fallbacks=fallbacks, metrics=metrics)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if flags.FLAGS.output:
    cli.output_folder(os.path.dirname(flags.FLAGS.output) or '.')
  result = evaluate(flags.FLAGS.config, flags.FLAGS.max_examples)
  print(f'{result["dataset"]} eval split, {result["examples"]} examples, '
        f'{result["fallbacks"]} GrabCut fallbacks to the seed:')
  for name, value in result['metrics'].items():
    print(f'  {name:28s} {value:.4f}')
  if flags.FLAGS.output:
    with open(flags.FLAGS.output, 'w') as f:
      json.dump(result, f, indent=2)
    print(f'written: {flags.FLAGS.output}')


def _define_flags():
  # Defined only when run as a program: other commands (benchmark, main)
  # define flags of the same names, and tests import them all in one process.
  config_flags.DEFINE_config_file(
      'config', None, 'Recipe file, e.g. configs/hourglass.py:smoke.',
      lock_config=True)
  flags.DEFINE_integer('max_examples', 0, 'Crops to run (0: all).')
  flags.DEFINE_string('output', None, 'JSON file for the metrics.')
  flags.mark_flags_as_required(['config'])


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
