"""Loss functions: heatmap MSE, soft Dice and cross-entropies.

Keypoint models: every stack (hourglass) or stage (CPM) predicts heatmaps
and is supervised (intermediate supervision); the total is a weighted sum
whose weights come from ``config.loss`` and whose parts are logged by name.

Segmentation models: soft Dice and cross-entropy over per-pixel softmaxes,
with pixels of unknown label (255) left out.

Multi-person detection (part_rcnn): CenterNet's focal loss on the centre
heatmap, and Mask R-CNN's spatial cross-entropy for per-RoI keypoints. How
the tasks weight and combine them is in `hpe_jax.training.tasks`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def heatmap_mse(pred, target, weights):
  """Mean squared error of [B, h, w, K] heatmaps, joints weighted [B, K].

  Joints with weight 0 (unlabelled, off the grid) contribute nothing; the
  mean is over all joints, so the loss scale does not depend on how many are
  labelled in a batch.
  """
  per_joint = jnp.mean(jnp.square(pred - target), axis=(-3, -2))
  return jnp.mean(per_joint * weights)


def stacked_heatmap_loss(stacked_pred, target, weights,
                         stack_weights=()) -> tuple[jnp.ndarray, dict]:
  """Weighted sum over stacks of `heatmap_mse`.

  Args:
    stacked_pred: [S, B, h, w, K] predictions of every stack / stage.
    target: [B, h, w, K] heatmap targets.
    weights: [B, K] joint weights.
    stack_weights: S weights; empty means 1 for every stack.

  Returns:
    (total loss, {'heatmap_stack{i}': loss of stack i}).
  """
  num = stacked_pred.shape[0]
  stack_weights = tuple(stack_weights) or (1.0,) * num
  if len(stack_weights) != num:
    raise ValueError(f'loss.stack_weights has {len(stack_weights)} entries '
                     f'for {num} stacks')
  parts = {f'heatmap_stack{i}': heatmap_mse(stacked_pred[i], target, weights)
           for i in range(num)}
  total = sum(w * parts[f'heatmap_stack{i}']
              for i, w in enumerate(stack_weights))
  return total, parts


def masked_mean(values, weights):
  """Mean of `values` weighted by `weights` (0 where all weights are 0)."""
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def soft_dice_loss(logits, labels, ignore_label: int = 255):
  """1 - soft Dice of the softmax over [B, h, w, C] logits, foreground mean.

  Probabilities and one-hot labels are summed over the whole batch per
  class (pixels labelled `ignore_label` left out), and the Dice is averaged
  over the foreground classes 1..C-1 (the person class for 2-class masks).
  A class absent from both labels and predictions scores Dice 1.
  """
  num_classes = logits.shape[-1]
  probs = jax.nn.softmax(logits, axis=-1)
  known = (labels != ignore_label)[..., None].astype(probs.dtype)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=probs.dtype) * known
  probs = probs * known
  axes = tuple(range(probs.ndim - 1))
  overlap = jnp.sum(probs * onehot, axes)
  total = jnp.sum(probs, axes) + jnp.sum(onehot, axes)
  dice = (2 * overlap + 1.0) / (total + 1.0)
  return 1.0 - jnp.mean(dice[1:])


def softmax_cross_entropy(logits, labels, ignore_label: int = 255):
  """Mean per-pixel cross-entropy of integer labels, ignoring a label."""
  known = labels != ignore_label
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.where(known, labels, 0))
  return masked_mean(ce, known.astype(ce.dtype))


def soft_target_cross_entropy(logits, target_probs, weights):
  """Mean per-pixel cross-entropy against probability maps, pixel-weighted."""
  ce = optax.softmax_cross_entropy(logits, target_probs)
  return masked_mean(ce, weights)


def center_focal_loss(logits, target, num_objects):
  """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), summed over
  [B, h, w] cells and divided by the number of objects.

  `target` is 1 at object centres and a Gaussian falling off around them;
  cells near a centre are penalised less for firing (the (1 - target)**4
  factor), as they would still give a good box.
  """
  logits = logits.astype(jnp.float32)
  p = jax.nn.sigmoid(logits)
  positive = (target >= 1.0).astype(jnp.float32)
  pos = -jax.nn.log_sigmoid(logits) * jnp.square(1 - p) * positive
  neg = (-jax.nn.log_sigmoid(-logits) * jnp.square(p) *
         (1 - target) ** 4 * (1 - positive))
  return (pos.sum() + neg.sum()) / jnp.maximum(num_objects, 1.0)


def spatial_cross_entropy(logits, target_maps, weights):
  """Cross-entropy of a softmax over the positions of each channel.

  Mask R-CNN's keypoint loss: every [..., H, W, K] channel is one
  distribution over its H * W positions, scored against `target_maps` (any
  non-negative maps, normalised here) and averaged with `weights` [..., K].
  """
  *lead, h, w, k = logits.shape
  logits = jnp.moveaxis(logits.astype(jnp.float32), -1, -3).reshape(
      *lead, k, h * w)
  target = jnp.moveaxis(target_maps, -1, -3).reshape(*lead, k, h * w)
  target = target / jnp.maximum(target.sum(-1, keepdims=True), 1e-12)
  return masked_mean(optax.softmax_cross_entropy(logits, target), weights)
