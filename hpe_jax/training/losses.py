"""Weighted losses of the keypoint models.

Every stack (hourglass) or stage (CPM) predicts heatmaps and is supervised
(intermediate supervision); the total is a weighted sum whose weights come
from ``config.loss`` and whose parts are logged by name.
"""

from __future__ import annotations

import jax.numpy as jnp


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
