"""Person-mask and body-part segmentation metrics, accumulated on the host.

`SegmentationMetrics` is fed the predicted and ground-truth label maps of an
evaluation split batch by batch (numpy, ``[B, h, w]``) and reports named
metrics at the end. Pixels labelled `skeletons.IGNORE_LABEL` (255: unknown,
or "person without a part label") are never scored, nor are padding rows
(``valid=False``).

Metric names:

* ``pixel_accuracy``: correct / scored pixels, always.
* Person masks (2 classes, 0 background and 1 person):

  - ``mask_iou``, ``mask_dice``: mean over images of the per-image IoU and
    Dice of the person class. An image whose ground truth and prediction are
    both empty scores 1; an image without a scored pixel is skipped.
  - ``mask_iou_pooled``, ``mask_dice_pooled``: the same over all pixels of
    the split pooled together.

* Body parts (more than 2 classes, 0 background):

  - ``part_iou/<name>``: pooled IoU of each class, background included; NaN
    for a class that occurs in neither ground truth nor prediction. Names
    are the given class names, else the class indices.
  - ``part_miou``: mean of the ``part_iou`` values over classes that occur,
    background included (the CIHP / PASCAL-Person-Part convention).
  - ``mask_iou_pooled``, ``mask_dice_pooled``: of the foreground, any part
    (label > 0) against any predicted part.

Pooled ratios follow the empty-mask convention too (1 when the foreground is
empty in both), and every metric is NaN when nothing was scored.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hpe_jax.data import skeletons


def confusion_matrix(pred, label, num_classes: int,
                     ignore_label: int = skeletons.IGNORE_LABEL) -> np.ndarray:
  """Pixel counts [C, C] int64: rows ground truth, columns prediction.

  Args:
    pred: int array of predicted classes in [0, num_classes).
    label: int array of the same shape; `ignore_label` pixels are skipped,
      others must lie in [0, num_classes).
    num_classes: C.
    ignore_label: the label of pixels that are not scored.

  Returns:
    The [C, C] confusion matrix.
  """
  pred = np.asarray(pred)
  label = np.asarray(label)
  if pred.shape != label.shape:
    raise ValueError(f'prediction {pred.shape} and label {label.shape} '
                     'shapes differ')
  keep = label != ignore_label
  pred = pred[keep].astype(np.int64)
  label = label[keep].astype(np.int64)
  for name, values in (('prediction', pred), ('label', label)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f'{name} values outside [0, {num_classes}): '
                       f'{values.min()}..{values.max()}')
  counts = np.bincount(label * num_classes + pred,
                       minlength=num_classes * num_classes)
  return counts.reshape(num_classes, num_classes)


def _overlap_ratios(tp, fp, fn):
  """(IoU, Dice), 1 where both the truth and the prediction are empty."""
  tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
  union = tp + fp + fn
  empty = union == 0
  safe = np.where(empty, 1.0, union)
  iou = np.where(empty, 1.0, tp / safe)
  dice = np.where(empty, 1.0, 2 * tp / (safe + tp))
  return iou, dice


class SegmentationMetrics:
  """Accumulates the metrics of the module docstring over batches."""

  def __init__(self, num_classes: int,
               class_names: Sequence[str] | None = None):
    if num_classes < 2:
      raise ValueError(f'num_classes must be at least 2, got {num_classes}')
    if class_names is not None and len(class_names) != num_classes:
      raise ValueError(f'{len(class_names)} class names for {num_classes} '
                       'classes')
    self.num_classes = num_classes
    self.class_names = (tuple(class_names) if class_names is not None else
                        tuple(str(c) for c in range(num_classes)))
    self.confusion = np.zeros((num_classes, num_classes), np.int64)
    self._image_iou_sum = 0.0
    self._image_dice_sum = 0.0
    self.image_count = 0

  def add(self, pred, label, valid=None) -> None:
    """Adds a batch.

    Args:
      pred: [B, h, w] int predicted classes.
      label: [B, h, w] int ground truth, `skeletons.IGNORE_LABEL` unknown.
      valid: [B] bool, False for padding rows (skipped); all True if None.
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.ndim != 3 or pred.shape != label.shape:
      raise ValueError(f'expected two [B, h, w] arrays, got {pred.shape} '
                       f'and {label.shape}')
    if valid is not None:
      valid = np.asarray(valid, bool)
      pred, label = pred[valid], label[valid]
    self.confusion += confusion_matrix(pred, label, self.num_classes)
    if self.num_classes == 2:
      self._add_images(pred, label)

  def _add_images(self, pred, label) -> None:
    scored = label != skeletons.IGNORE_LABEL
    truth = scored & (label == 1)
    guess = scored & (pred == 1)
    tp = (truth & guess).sum((1, 2))
    fp = (guess & ~truth).sum((1, 2))
    fn = (truth & ~guess).sum((1, 2))
    iou, dice = _overlap_ratios(tp, fp, fn)
    counted = scored.any((1, 2))
    self._image_iou_sum += float(iou[counted].sum())
    self._image_dice_sum += float(dice[counted].sum())
    self.image_count += int(counted.sum())

  def compute(self) -> dict[str, float]:
    """The named metrics of everything added so far."""
    cm = self.confusion
    total = cm.sum()
    nan = float('nan')
    metrics = {'pixel_accuracy': float(np.trace(cm) / total) if total else nan}
    if self.num_classes == 2:
      count = self.image_count
      metrics['mask_iou'] = self._image_iou_sum / count if count else nan
      metrics['mask_dice'] = self._image_dice_sum / count if count else nan
    else:
      metrics.update(self._part_metrics())
    iou, dice = _overlap_ratios(cm[1:, 1:].sum(), cm[0, 1:].sum(),
                                cm[1:, 0].sum())
    metrics['mask_iou_pooled'] = float(iou) if total else nan
    metrics['mask_dice_pooled'] = float(dice) if total else nan
    return metrics

  def _part_metrics(self) -> dict[str, float]:
    cm = self.confusion
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    occurs = union > 0
    iou = np.where(occurs, tp / np.where(occurs, union, 1), np.nan)
    metrics = {f'part_iou/{name}': float(v)
               for name, v in zip(self.class_names, iou)}
    metrics['part_miou'] = (float(iou[occurs].mean()) if occurs.any() else
                            float('nan'))
    return metrics
