"""Conversions of keypoint arrays between skeletons.

A target joint is copied from the source joint of the same name; joints the
source lacks are derived by these rules (visibility of a derived joint is the
lowest of its inputs; if any input is unlabelled, the joint is unlabelled):

* ``neck`` and ``thorax``: midpoint of the shoulders (COCO has no neck).
* ``mid_hip`` and ``pelvis``: midpoint of the hips.
* ``upper_neck`` (MPII): from LSP's ``neck``, the joint it annotates.
* LSP ``neck`` from MPII: MPII's ``upper_neck``.
* ``head_top`` from COCO's face points (the pose-conditioned mask network
  needs LSP-14 from COCO-17):

  1. the face centre ``c`` is the mean of the labelled points among nose,
     eyes and ears;
  2. with both shoulders labelled, the head points from the neck
     (mid-shoulder ``n``) through the face: ``head_top = c + 0.4 (c - n)``;
     eye level sits about 2.5 head-top-to-eye distances above the shoulder
     line in adult proportions;
  3. without both shoulders, with both eyes and the nose labelled, the head
     points from the nose through the mid-eye point ``e``:
     ``head_top = e + 3 (e - nose)`` (the crown is about three nose-to-eye
     distances above the eyes);
  4. otherwise the head top is unlabelled.

Joints of the target that neither exist in the source nor have a rule (for
example BODY-25's feet from COCO) are unlabelled: x = y = v = 0.

`ConvertedSkeleton` applies a conversion to every example of a dataset
(``config.dataset.skeleton``), e.g. to train the LSP-14 pose-mask network
on COCO or the synthetic people.
"""

from __future__ import annotations

import numpy as np

from hpe_jax.data import example
from hpe_jax.data import skeletons

_FACE = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear')
HEAD_TOP_FROM_NECK = 0.4
HEAD_TOP_FROM_NOSE = 3.0


def _midpoint(kp: np.ndarray, src: skeletons.Skeleton, a: str, b: str):
  if a not in src.joint_names or b not in src.joint_names:
    return None
  pa, pb = kp[..., src.index(a), :], kp[..., src.index(b), :]
  ok = (pa[..., 2] > 0) & (pb[..., 2] > 0)
  xy = (pa[..., :2] + pb[..., :2]) / 2
  v = np.minimum(pa[..., 2], pb[..., 2])
  return _joint(xy, v, ok)


def _joint(xy, v, ok):
  out = np.concatenate([xy, v[..., None]], -1)
  return np.where(ok[..., None], out, 0).astype(np.float32)


def _head_top(kp: np.ndarray, src: skeletons.Skeleton):
  if not all(n in src.joint_names for n in _FACE):
    return None
  face = kp[..., [src.index(n) for n in _FACE], :]
  labelled = face[..., 2] > 0
  count = labelled.sum(-1)
  centre = (face[..., :2] * labelled[..., None]).sum(-2) / np.maximum(
      count, 1)[..., None]
  face_v = np.where(labelled, face[..., 2], 2).min(-1)

  neck = _midpoint(kp, src, 'left_shoulder', 'right_shoulder')
  has_neck = (neck[..., 2] > 0) & (count > 0)
  from_neck = centre + HEAD_TOP_FROM_NECK * (centre - neck[..., :2])

  nose = face[..., 0, :]
  eyes = _midpoint(kp, src, 'left_eye', 'right_eye')
  has_eyes = (eyes[..., 2] > 0) & (nose[..., 2] > 0)
  from_nose = eyes[..., :2] + HEAD_TOP_FROM_NOSE * (eyes[..., :2] -
                                                    nose[..., :2])

  xy = np.where(has_neck[..., None], from_neck, from_nose)
  v = np.where(has_neck, np.minimum(face_v, neck[..., 2]),
               np.minimum(eyes[..., 2], nose[..., 2]))
  return _joint(xy, v, has_neck | has_eyes)


def _derived(name: str, kp: np.ndarray, src: skeletons.Skeleton):
  if name == 'neck' and 'upper_neck' in src.joint_names:
    return kp[..., src.index('upper_neck'), :]
  if name == 'upper_neck' and 'neck' in src.joint_names:
    return kp[..., src.index('neck'), :]
  if name in ('neck', 'thorax'):
    return _midpoint(kp, src, 'left_shoulder', 'right_shoulder')
  if name in ('mid_hip', 'pelvis'):
    return _midpoint(kp, src, 'left_hip', 'right_hip')
  if name == 'head_top':
    return _head_top(kp, src)
  return None


def convert_keypoints(keypoints: np.ndarray, src: skeletons.Skeleton,
                      dst: skeletons.Skeleton) -> np.ndarray:
  """Converts [..., K_src, 3] keypoints of `src` to [..., K_dst, 3] of `dst`."""
  keypoints = np.asarray(keypoints, np.float32)
  if keypoints.shape[-2:] != (src.num_joints, 3):
    raise ValueError(f'expected [..., {src.num_joints}, 3] keypoints for '
                     f'{src.name}, got {keypoints.shape}')
  joints = []
  for name in dst.joint_names:
    if name in src.joint_names:
      joint = keypoints[..., src.index(name), :]
    else:
      joint = _derived(name, keypoints, src)
      if joint is None:
        joint = np.zeros(keypoints.shape[:-2] + (3,), np.float32)
    joints.append(joint)
  return np.stack(joints, -2)


class ConvertedSkeleton(example.ImageDataset):
  """The examples of `dataset` with keypoints converted to `skeleton`."""

  def __init__(self, dataset: example.ImageDataset,
               skeleton: skeletons.Skeleton):
    if dataset.skeleton is None:
      raise ValueError(f'{dataset.name} has no keypoints to convert to '
                       f'{skeleton.name}')
    self.dataset = dataset
    self.name = f'{dataset.name}@{skeleton.name}'
    self.skeleton = skeleton
    self.part_schema = dataset.part_schema
    self.has_masks = dataset.has_masks
    self.num_skipped = dataset.num_skipped

  def __len__(self) -> int:
    return len(self.dataset)

  def annotation(self, index: int) -> example.Example:
    ann = dict(self.dataset.annotation(index))
    ann['keypoints'] = convert_keypoints(ann['keypoints'],
                                         self.dataset.skeleton, self.skeleton)
    return ann

  def load_pixels(self, index: int,
                  annotation: example.Example) -> example.Example:
    return self.dataset.load_pixels(index, annotation)
