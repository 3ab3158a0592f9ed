"""Per-pixel output heads shared by the segmentation models (U-Net, H-Net).

The decoder's last feature map goes through 1x1 convs into:

* ``mask_logits`` [B, h, w, num_classes]: background / person (2 classes) or
  background + body parts;
* ``joint_heatmaps`` [B, h, w, K] (``joint_head`` 'regression' or 'both'):
  one regressed Gaussian heatmap per joint;
* ``joint_logits`` [B, h, w, K + 1] (``joint_head`` 'softmax' or 'both'): a
  per-pixel softmax over background (channel 0) and the K joints.

Outputs are float32 whatever the compute dtype, so losses and decoding never
see bfloat16.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

JOINT_HEADS = ('none', 'regression', 'softmax', 'both')


def check_joint_head(joint_head: str) -> None:
  if joint_head not in JOINT_HEADS:
    raise ValueError(f'joint_head must be one of {JOINT_HEADS}, got '
                     f'{joint_head!r}')


class SegmentationHeads(nn.Module):
  """1x1 conv heads over decoder features (see the module docstring)."""
  num_classes: int
  num_joints: int
  joint_head: str = 'none'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x) -> dict[str, Any]:
    check_joint_head(self.joint_head)

    def head(features, name):
      y = nn.Conv(features, (1, 1), dtype=self.dtype,
                  param_dtype=jnp.float32, name=name)(x)
      return y.astype(jnp.float32)

    out = {'mask_logits': head(self.num_classes, 'mask')}
    if self.joint_head in ('regression', 'both'):
      out['joint_heatmaps'] = head(self.num_joints, 'joint_regression')
    if self.joint_head in ('softmax', 'both'):
      out['joint_logits'] = head(self.num_joints + 1, 'joint_softmax')
    return out
