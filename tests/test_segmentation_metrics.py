"""Segmentation metrics: hand-computed cases and a pixel-loop reference."""

import math

import numpy as np
import pytest

from hpe_jax.evaluation import segmentation_metrics as sm

X = 255  # ignored pixel


def reference(batches, num_classes):
  """The metrics by explicit loops over images, pixels and classes."""
  cm = [[0] * num_classes for _ in range(num_classes)]
  image_iou, image_dice = [], []
  for pred, label, valid in batches:
    for b in range(len(pred)):
      if not valid[b]:
        continue
      tp = fp = fn = scored = 0
      for i in range(pred.shape[1]):
        for j in range(pred.shape[2]):
          t, p = int(label[b, i, j]), int(pred[b, i, j])
          if t == X:
            continue
          cm[t][p] += 1
          scored += 1
          tp += t == 1 and p == 1
          fp += t != 1 and p == 1
          fn += t == 1 and p != 1
      if scored:
        union = tp + fp + fn
        image_iou.append(tp / union if union else 1.0)
        image_dice.append(2 * tp / (union + tp) if union else 1.0)
  total = sum(map(sum, cm))
  out = {'pixel_accuracy': sum(cm[c][c] for c in range(num_classes)) / total}
  if num_classes == 2:
    out['mask_iou'] = sum(image_iou) / len(image_iou)
    out['mask_dice'] = sum(image_dice) / len(image_dice)
  else:
    ious = []
    for c in range(num_classes):
      row = sum(cm[c])
      col = sum(cm[r][c] for r in range(num_classes))
      union = row + col - cm[c][c]
      out[f'part_iou/{c}'] = cm[c][c] / union if union else math.nan
      if union:
        ious.append(cm[c][c] / union)
    out['part_miou'] = sum(ious) / len(ious)
  tp = sum(cm[t][p] for t in range(1, num_classes)
           for p in range(1, num_classes))
  fp = sum(cm[0][p] for p in range(1, num_classes))
  fn = sum(cm[t][0] for t in range(1, num_classes))
  out['mask_iou_pooled'] = tp / (tp + fp + fn)
  out['mask_dice_pooled'] = 2 * tp / (2 * tp + fp + fn)
  return out


def test_confusion_matrix_rows_are_truth_and_ignores_label_255():
  label = np.array([[0, 1, 2], [2, X, 1]])
  pred = np.array([[0, 2, 2], [1, 0, 1]])
  np.testing.assert_array_equal(
      sm.confusion_matrix(pred, label, 3),
      [[1, 0, 0], [0, 1, 1], [0, 1, 1]])
  assert sm.confusion_matrix(pred, label, 3).dtype == np.int64
  with pytest.raises(ValueError, match='values outside'):
    sm.confusion_matrix(pred, label, 2)


def test_binary_masks_hand_computed():
  metrics = sm.SegmentationMetrics(2)
  label = np.array([[[0, 1, 1], [0, 1, X]],
                    [[0, 0, 0], [0, 0, 0]],  # empty truth and prediction
                    [[X, X, X], [X, X, X]],  # nothing scored: skipped
                    [[1, 1, 1], [1, 1, 1]]])  # padding
  pred = np.array([[[1, 1, 0], [0, 1, 1]],
                   [[0, 0, 0], [0, 0, 0]],
                   [[1, 1, 1], [1, 1, 1]],
                   [[0, 0, 0], [0, 0, 0]]])
  metrics.add(pred, label, valid=[True, True, True, False])
  got = metrics.compute()
  # Image 0: tp 2, fp 1, fn 1 -> IoU 1/2, Dice 2/3; image 1 scores 1.
  assert got == pytest.approx({
      'pixel_accuracy': 9 / 11, 'mask_iou': 0.75, 'mask_dice': 5 / 6,
      'mask_iou_pooled': 0.5, 'mask_dice_pooled': 2 / 3})
  assert metrics.image_count == 2


def test_batches_accumulate_like_one_batch():
  rng = np.random.default_rng(1)
  label = rng.integers(0, 2, (6, 4, 5))
  pred = rng.integers(0, 2, (6, 4, 5))
  whole = sm.SegmentationMetrics(2)
  whole.add(pred, label)
  split = sm.SegmentationMetrics(2)
  split.add(pred[:2], label[:2])
  split.add(pred[2:], label[2:])
  assert whole.compute() == pytest.approx(split.compute())


def test_parts_hand_computed_with_background_in_the_mean():
  metrics = sm.SegmentationMetrics(
      4, ('background', 'head', 'torso', 'arms'))
  metrics.add(np.array([[[0, 1, 1], [2, 0, 2]]]),
              np.array([[[0, 1, 2], [2, 2, X]]]))
  got = metrics.compute()
  assert math.isnan(got.pop('part_iou/arms'))  # occurs nowhere
  assert got == pytest.approx({
      'pixel_accuracy': 3 / 5, 'part_iou/background': 1 / 2,
      'part_iou/head': 1 / 2, 'part_iou/torso': 1 / 3,
      'part_miou': 4 / 9, 'mask_iou_pooled': 3 / 4,
      'mask_dice_pooled': 6 / 7})


def test_nothing_scored_gives_nan():
  metrics = sm.SegmentationMetrics(2)
  metrics.add(np.zeros((1, 2, 2), int), np.full((1, 2, 2), X))
  assert all(math.isnan(v) for v in metrics.compute().values())


@pytest.mark.parametrize('num_classes', [2, 7, 20])
def test_matches_pixel_loop_reference(num_classes):
  rng = np.random.default_rng(num_classes)
  batches = []
  for _ in range(3):
    shape = (4, 6, 7)
    label = rng.integers(0, num_classes, shape)
    label[rng.random(shape) < 0.15] = X
    label[0] = X  # an image with nothing scored
    pred = rng.integers(0, num_classes, shape)
    if num_classes == 2:
      label[1], pred[1] = 0, 0  # an empty image, predicted empty
    batches.append((pred, label, rng.random(4) < 0.8))
  metrics = sm.SegmentationMetrics(num_classes)
  for pred, label, valid in batches:
    metrics.add(pred, label, valid)
  assert metrics.compute() == pytest.approx(
      reference(batches, num_classes), nan_ok=True)


def test_rejects_mismatched_inputs():
  with pytest.raises(ValueError, match='class names'):
    sm.SegmentationMetrics(3, ('background', 'head'))
  with pytest.raises(ValueError, match='B, h, w'):
    sm.SegmentationMetrics(2).add(np.zeros((2, 3)), np.zeros((2, 3)))
