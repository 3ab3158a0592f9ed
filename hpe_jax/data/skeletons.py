"""Keypoint skeletons and body-part label schemas: one definition each.

A `Skeleton` names its joints in order and derives from the names everything
the rest of the code needs: the left/right flip permutation (``left_x`` pairs
with ``right_x``), limbs for drawing, the joints that define torso and head
size for PCK/PCKh, and COCO's OKS sigmas where the dataset defines them.

A `PartSchema` does the same for per-pixel body-part label maps.

Joint coordinates everywhere in hpe_jax are in the pixel-index convention
(pixel ``(i, j)`` has its centre at ``x=j, y=i``), visibility follows COCO:
0 not labelled, 1 labelled but hidden, 2 labelled and visible.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


def _mirror_name(name: str) -> str:
  for a, b in (('left_', 'right_'), ('right_', 'left_')):
    if name.startswith(a):
      return b + name[len(a):]
  return name


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """A keypoint layout.

  Attributes:
    name: registry name, e.g. ``'coco17'``.
    joint_names: joint names in channel order; left/right joints are named
      ``left_*`` / ``right_*`` (person-centric sides).
    limbs: pairs of joint names joined when drawing.
    torso: two joint names whose distance is the torso size for PCK
      (``None`` when the skeleton has no such pair).
    oks_sigmas: per-joint COCO OKS sigmas, or ``None``.
  """
  name: str
  joint_names: tuple[str, ...]
  limbs: tuple[tuple[str, str], ...]
  torso: tuple[str, str] | None = ('left_shoulder', 'right_hip')
  oks_sigmas: tuple[float, ...] | None = None

  def __post_init__(self):
    if len(set(self.joint_names)) != len(self.joint_names):
      raise ValueError(f'{self.name}: duplicate joint names')
    for a, b in self.limbs + ((self.torso,) if self.torso else ()):
      for j in (a, b):
        if j not in self.joint_names:
          raise ValueError(f'{self.name}: unknown joint {j!r}')
    if self.oks_sigmas is not None and len(self.oks_sigmas) != self.num_joints:
      raise ValueError(f'{self.name}: {len(self.oks_sigmas)} sigmas for '
                       f'{self.num_joints} joints')
    for n in self.joint_names:
      if _mirror_name(n) not in self.joint_names:
        raise ValueError(f'{self.name}: {n!r} has no mirror joint')

  @property
  def num_joints(self) -> int:
    return len(self.joint_names)

  def index(self, name: str) -> int:
    return self.joint_names.index(name)

  @functools.cached_property
  def flip_permutation(self) -> np.ndarray:
    """``perm[k]`` is the joint that joint k becomes in a mirrored image."""
    return np.array([self.index(_mirror_name(n)) for n in self.joint_names],
                    np.int32)

  @functools.cached_property
  def flip_pairs(self) -> tuple[tuple[int, int], ...]:
    return tuple((i, int(j)) for i, j in enumerate(self.flip_permutation)
                 if i < j)

  @functools.cached_property
  def limb_indices(self) -> np.ndarray:
    """[L, 2] joint indices of the limbs."""
    return np.array([(self.index(a), self.index(b)) for a, b in self.limbs],
                    np.int32).reshape(-1, 2)

  @functools.cached_property
  def torso_indices(self) -> tuple[int, int] | None:
    return None if self.torso is None else tuple(map(self.index, self.torso))

  @functools.cached_property
  def lower_body(self) -> np.ndarray:
    """Per joint: True for hips and below (half-body augmentation)."""
    lower = ('hip', 'knee', 'ankle', 'pelvis', 'toe', 'heel')
    return np.array([any(p in n for p in lower) for n in self.joint_names])

  @functools.cached_property
  def side(self) -> np.ndarray:
    """Per joint: -1 left, +1 right, 0 centre (used for drawing colours)."""
    return np.array([-1 if n.startswith('left_') else
                     1 if n.startswith('right_') else 0
                     for n in self.joint_names], np.int32)


COCO17 = Skeleton(
    name='coco17',
    joint_names=(
        'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear',
        'left_shoulder', 'right_shoulder', 'left_elbow', 'right_elbow',
        'left_wrist', 'right_wrist', 'left_hip', 'right_hip', 'left_knee',
        'right_knee', 'left_ankle', 'right_ankle'),
    # The COCO person category's own skeleton.
    limbs=(
        ('left_ankle', 'left_knee'), ('left_knee', 'left_hip'),
        ('right_ankle', 'right_knee'), ('right_knee', 'right_hip'),
        ('left_hip', 'right_hip'), ('left_shoulder', 'left_hip'),
        ('right_shoulder', 'right_hip'), ('left_shoulder', 'right_shoulder'),
        ('left_shoulder', 'left_elbow'), ('right_shoulder', 'right_elbow'),
        ('left_elbow', 'left_wrist'), ('right_elbow', 'right_wrist'),
        ('left_eye', 'right_eye'), ('nose', 'left_eye'), ('nose', 'right_eye'),
        ('left_eye', 'left_ear'), ('right_eye', 'right_ear'),
        ('left_ear', 'left_shoulder'), ('right_ear', 'right_shoulder')),
    oks_sigmas=(.026, .025, .025, .035, .035, .079, .079, .072, .072, .062,
                .062, .107, .107, .087, .087, .089, .089),
)

MPII16 = Skeleton(
    name='mpii16',
    joint_names=(
        'right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee',
        'left_ankle', 'pelvis', 'thorax', 'upper_neck', 'head_top',
        'right_wrist', 'right_elbow', 'right_shoulder', 'left_shoulder',
        'left_elbow', 'left_wrist'),
    limbs=(
        ('right_ankle', 'right_knee'), ('right_knee', 'right_hip'),
        ('right_hip', 'pelvis'), ('left_hip', 'pelvis'),
        ('left_knee', 'left_hip'), ('left_ankle', 'left_knee'),
        ('pelvis', 'thorax'), ('thorax', 'upper_neck'),
        ('upper_neck', 'head_top'), ('right_wrist', 'right_elbow'),
        ('right_elbow', 'right_shoulder'), ('right_shoulder', 'thorax'),
        ('left_shoulder', 'thorax'), ('left_elbow', 'left_shoulder'),
        ('left_wrist', 'left_elbow')),
)

LSP14 = Skeleton(
    name='lsp14',
    joint_names=(
        'right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee',
        'left_ankle', 'right_wrist', 'right_elbow', 'right_shoulder',
        'left_shoulder', 'left_elbow', 'left_wrist', 'neck', 'head_top'),
    limbs=(
        ('right_ankle', 'right_knee'), ('right_knee', 'right_hip'),
        ('left_hip', 'left_knee'), ('left_knee', 'left_ankle'),
        ('right_hip', 'left_hip'), ('right_shoulder', 'right_hip'),
        ('left_shoulder', 'left_hip'), ('right_wrist', 'right_elbow'),
        ('right_elbow', 'right_shoulder'), ('left_shoulder', 'left_elbow'),
        ('left_elbow', 'left_wrist'), ('right_shoulder', 'neck'),
        ('left_shoulder', 'neck'), ('neck', 'head_top')),
)

# OpenPose BODY_25, used by the combined U-Net mask + joint models.
BODY25 = Skeleton(
    name='body25',
    joint_names=(
        'nose', 'neck', 'right_shoulder', 'right_elbow', 'right_wrist',
        'left_shoulder', 'left_elbow', 'left_wrist', 'mid_hip', 'right_hip',
        'right_knee', 'right_ankle', 'left_hip', 'left_knee', 'left_ankle',
        'right_eye', 'left_eye', 'right_ear', 'left_ear', 'left_big_toe',
        'left_small_toe', 'left_heel', 'right_big_toe', 'right_small_toe',
        'right_heel'),
    limbs=(
        ('neck', 'nose'), ('neck', 'right_shoulder'), ('neck', 'left_shoulder'),
        ('right_shoulder', 'right_elbow'), ('right_elbow', 'right_wrist'),
        ('left_shoulder', 'left_elbow'), ('left_elbow', 'left_wrist'),
        ('neck', 'mid_hip'), ('mid_hip', 'right_hip'), ('mid_hip', 'left_hip'),
        ('right_hip', 'right_knee'), ('right_knee', 'right_ankle'),
        ('left_hip', 'left_knee'), ('left_knee', 'left_ankle'),
        ('nose', 'right_eye'), ('nose', 'left_eye'),
        ('right_eye', 'right_ear'), ('left_eye', 'left_ear'),
        ('left_ankle', 'left_big_toe'), ('left_big_toe', 'left_small_toe'),
        ('left_ankle', 'left_heel'), ('right_ankle', 'right_big_toe'),
        ('right_big_toe', 'right_small_toe'), ('right_ankle', 'right_heel')),
)

SKELETONS = {s.name: s for s in (COCO17, MPII16, LSP14, BODY25)}


def get_skeleton(name: str) -> Skeleton:
  try:
    return SKELETONS[name]
  except KeyError:
    raise ValueError(f'Unknown skeleton {name!r}; known: '
                     f'{sorted(SKELETONS)}') from None


@dataclasses.dataclass(frozen=True)
class PartSchema:
  """Labels of a per-pixel body-part map (label 0 is background).

  Label 255 in a part map means "person, but no part label" and is ignored by
  losses and metrics.
  """
  name: str
  label_names: tuple[str, ...]

  def __post_init__(self):
    for n in self.label_names:
      if _mirror_name(n) not in self.label_names:
        raise ValueError(f'{self.name}: {n!r} has no mirror label')

  @property
  def num_labels(self) -> int:
    return len(self.label_names)

  @functools.cached_property
  def flip_lut(self) -> np.ndarray:
    """[256] uint8 table mapping each label to its label in a mirrored image."""
    lut = np.arange(256, dtype=np.uint8)
    for i, n in enumerate(self.label_names):
      lut[i] = self.label_names.index(_mirror_name(n))
    return lut


IGNORE_LABEL = 255

# The six parts of the design (and of Pascal-Person-Part).
BODY_PARTS6 = PartSchema(
    name='parts6',
    label_names=('background', 'head', 'torso', 'upper_arms', 'lower_arms',
                 'upper_legs', 'lower_legs'))

# CIHP / LIP 20-class human parsing.
CIHP20 = PartSchema(
    name='cihp20',
    label_names=(
        'background', 'hat', 'hair', 'glove', 'sunglasses', 'upper_clothes',
        'dress', 'coat', 'socks', 'pants', 'torso_skin', 'scarf', 'skirt',
        'face', 'left_arm', 'right_arm', 'left_leg', 'right_leg', 'left_shoe',
        'right_shoe'))

PART_SCHEMAS = {s.name: s for s in (BODY_PARTS6, CIHP20)}
