"""Keypoint skeletons and body-part label schemas, read from schema files.

A `Skeleton` names its joints in order and derives from them everything the
rest of the code needs: the left/right flip permutation, limbs for drawing,
the joints that define torso and head size for PCK/PCKh, the lower body for
half-body augmentation, and COCO's OKS sigmas where the dataset defines them.
A `PartSchema` does the same for per-pixel body-part label maps, and maps the
values stored in label PNGs to the classes a model predicts (ignoring or
merging some).

Both are written as small JSON files (``docs/data.md`` describes the format);
the built-in ones (``coco17``, ``mpii16``, ``lsp14``, ``body25``, ``parts6``,
``cihp20``) are such files in ``hpe_jax/data/schemas/``, and wherever a config
names a skeleton or part schema it may give a file path instead.

Joint coordinates everywhere in hpe_jax are in the pixel-index convention
(pixel ``(i, j)`` has its centre at ``x=j, y=i``), visibility follows COCO:
0 not labelled, 1 labelled but hidden, 2 labelled and visible.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np

from hpe_jax import errors
from hpe_jax.data import json_file

IGNORE_LABEL = 255
_DEFAULT_TORSO = ('left_shoulder', 'right_hip')
_BUILTIN_DIR = os.path.join(os.path.dirname(__file__), 'schemas')


def _mirror_name(name: str) -> str:
  for a, b in (('left_', 'right_'), ('right_', 'left_')):
    if name.startswith(a):
      return b + name[len(a):]
  return name


def _mirror_pairs_by_name(names: tuple[str, ...],
                          what: str) -> tuple[tuple[str, str], ...]:
  """(left, right) name pairs from ``left_*`` / ``right_*`` names."""
  pairs = []
  for n in names:
    if _mirror_name(n) not in names:
      raise ValueError(f'{what}: {n!r} has no mirror (name it left_*/right_* '
                       'with a partner, or list mirror_pairs)')
    if n.startswith('left_'):
      pairs.append((n, _mirror_name(n)))
  return tuple(pairs)


def _mirror_table(names: tuple[str, ...],
                  pairs: tuple[tuple[str, str], ...] | None,
                  what: str) -> tuple[np.ndarray, np.ndarray]:
  """Per name: the index it becomes when mirrored, and its side.

  Returns ``(perm, side)``: ``perm[k]`` is the entry that entry k becomes in
  a mirrored image, ``side[k]`` is -1 left, +1 right, 0 centre. Each pair
  lists the left entry first; without `pairs` they come from the names.
  """
  if pairs is None:
    pairs = _mirror_pairs_by_name(names, what)
  perm = np.arange(len(names), dtype=np.int32)
  side = np.zeros(len(names), np.int32)
  seen = set()
  for left, right in pairs:
    for n in (left, right):
      if n not in names:
        raise ValueError(f'{what}: mirror pair names unknown {n!r}')
      if n in seen:
        raise ValueError(f'{what}: {n!r} is in more than one mirror pair')
      seen.add(n)
    a, b = names.index(left), names.index(right)
    perm[a], perm[b] = b, a
    side[a], side[b] = -1, 1
  return perm, side


@dataclasses.dataclass(frozen=True)
class Skeleton:
  """A keypoint layout.

  Attributes:
    name: registry name, e.g. ``'coco17'``, or the schema file's name.
    joint_names: joint names in channel order.
    limbs: pairs of joint names joined when drawing.
    torso: two joint names whose distance is the torso size for PCK
      (``None`` when the skeleton has no such pair).
    oks_sigmas: per-joint COCO OKS sigmas, or ``None``.
    mirror_pairs: (left, right) joint names that swap in a mirrored image;
      ``None``: ``left_x`` pairs with ``right_x`` (person-centric sides).
    head: two joint names whose distance is the head size for PCKh on data
      without head boxes (``None``: PCKh needs head boxes).
    lower_body_joints: joints below the waist for half-body augmentation;
      ``None``: hips and below, by name.
  """
  name: str
  joint_names: tuple[str, ...]
  limbs: tuple[tuple[str, str], ...]
  torso: tuple[str, str] | None = _DEFAULT_TORSO
  oks_sigmas: tuple[float, ...] | None = None
  mirror_pairs: tuple[tuple[str, str], ...] | None = None
  head: tuple[str, str] | None = None
  lower_body_joints: tuple[str, ...] | None = None

  def __post_init__(self):
    if not self.joint_names:
      raise ValueError(f'{self.name}: no joints')
    if len(set(self.joint_names)) != len(self.joint_names):
      raise ValueError(f'{self.name}: duplicate joint names')
    named = (self.limbs + tuple(p for p in (self.torso, self.head) if p) +
             (tuple((j, j) for j in self.lower_body_joints)
              if self.lower_body_joints else ()))
    for pair in named:
      if len(pair) != 2:
        raise ValueError(f'{self.name}: {list(pair)} is not a pair of joints')
      for j in pair:
        if j not in self.joint_names:
          raise ValueError(f'{self.name}: unknown joint {j!r}')
    if self.oks_sigmas is not None and len(self.oks_sigmas) != self.num_joints:
      raise ValueError(f'{self.name}: {len(self.oks_sigmas)} sigmas for '
                       f'{self.num_joints} joints')
    _mirror_table(self.joint_names, self.mirror_pairs, self.name)

  @property
  def num_joints(self) -> int:
    return len(self.joint_names)

  def index(self, name: str) -> int:
    return self.joint_names.index(name)

  @functools.cached_property
  def flip_permutation(self) -> np.ndarray:
    """``perm[k]`` is the joint that joint k becomes in a mirrored image."""
    return _mirror_table(self.joint_names, self.mirror_pairs, self.name)[0]

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
  def head_indices(self) -> tuple[int, int] | None:
    return None if self.head is None else tuple(map(self.index, self.head))

  @functools.cached_property
  def lower_body(self) -> np.ndarray:
    """Per joint: True for hips and below (half-body augmentation)."""
    if self.lower_body_joints is not None:
      return np.isin(self.joint_names, self.lower_body_joints)
    lower = ('hip', 'knee', 'ankle', 'pelvis', 'toe', 'heel')
    return np.array([any(p in n for p in lower) for n in self.joint_names])

  @functools.cached_property
  def side(self) -> np.ndarray:
    """Per joint: -1 left, +1 right, 0 centre (used for drawing colours)."""
    return _mirror_table(self.joint_names, self.mirror_pairs, self.name)[1]


@dataclasses.dataclass(frozen=True)
class PartSchema:
  """The classes of a per-pixel body-part map (class 0 is background).

  Label PNGs store `file_labels`; each becomes the class `file_classes`
  names (so several file labels may merge into one class) or, for ignored
  labels, `IGNORE_LABEL`. Label 255 in a file always means "person, but no
  part label" and is ignored by losses and metrics.

  Attributes:
    name: registry name or the schema file's name.
    label_names: class names in the order the model predicts them.
    colors: RGB colour per class for drawings (``None``:
      `visualization.label_palette`).
    mirror_pairs: (left, right) class names that swap in a mirrored image;
      ``None``: by ``left_*`` / ``right_*`` names.
    file_labels: names of the values 0, 1, ... stored in label PNGs
      (``None``: the classes themselves).
    file_classes: per file label, the index of its class or `IGNORE_LABEL`.
  """
  name: str
  label_names: tuple[str, ...]
  colors: tuple[tuple[int, int, int], ...] | None = None
  mirror_pairs: tuple[tuple[str, str], ...] | None = None
  file_labels: tuple[str, ...] | None = None
  file_classes: tuple[int, ...] | None = None

  def __post_init__(self):
    if len(self.label_names) < 2:
      raise ValueError(f'{self.name}: needs background and at least one '
                       'class')
    if len(set(self.label_names)) != len(self.label_names):
      raise ValueError(f'{self.name}: duplicate class names')
    if len(self.label_names) > IGNORE_LABEL:
      raise ValueError(f'{self.name}: more than {IGNORE_LABEL} classes')
    if self.colors is not None and (
        len(self.colors) != self.num_labels or
        any(len(c) != 3 or not all(0 <= v <= 255 for v in c)
            for c in self.colors)):
      raise ValueError(f'{self.name}: needs one RGB colour (0-255) per '
                       f'class, {self.num_labels} in all')
    if (self.file_labels is None) != (self.file_classes is None) or (
        self.file_labels is not None and
        len(self.file_labels) != len(self.file_classes)):
      raise ValueError(f'{self.name}: file_labels and file_classes differ')
    _mirror_table(self.label_names, self.mirror_pairs, self.name)

  @property
  def num_labels(self) -> int:
    """Number of classes the model predicts."""
    return len(self.label_names)

  @functools.cached_property
  def flip_lut(self) -> np.ndarray:
    """[256] uint8 table mapping each class to its class in a mirrored image."""
    lut = np.arange(256, dtype=np.uint8)
    lut[:self.num_labels] = _mirror_table(self.label_names, self.mirror_pairs,
                                          self.name)[0]
    return lut

  @property
  def num_file_labels(self) -> int:
    """Values 0 .. n-1 a label PNG may hold (besides `IGNORE_LABEL`)."""
    return len(self.file_labels or self.label_names)

  @functools.cached_property
  def file_lut(self) -> np.ndarray:
    """[256] uint8 table from stored label values to classes."""
    lut = np.arange(256, dtype=np.uint8)
    if self.file_classes is not None:
      lut[:len(self.file_classes)] = self.file_classes
    return lut


def _pairs(value: Any, field: str) -> tuple[tuple[str, str], ...]:
  if not isinstance(value, list) or not all(
      isinstance(p, list) and len(p) == 2 and all(isinstance(n, str) for n in p)
      for p in value):
    raise ValueError(f'"{field}" must be a list of [name, name] pairs')
  return tuple(tuple(p) for p in value)


def _names(value: Any, field: str) -> tuple[str, ...]:
  if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
    raise ValueError(f'"{field}" must be a list of names')
  return tuple(value)


_SKELETON_FIELDS = {'kind', 'name', 'joints', 'limbs', 'torso', 'head',
                    'oks_sigmas', 'mirror_pairs', 'lower_body'}
_PARTS_FIELDS = {'kind', 'name', 'labels', 'colors', 'mirror_pairs', 'ignore',
                 'merge'}


def _skeleton_from_dict(d: dict[str, Any]) -> Skeleton:
  def optional_pair(field):
    value = d.get(field)
    return None if value is None else _pairs([value], field)[0]

  return Skeleton(
      name=d['name'],
      joint_names=_names(d['joints'], 'joints'),
      limbs=_pairs(d.get('limbs', []), 'limbs'),
      torso=(optional_pair('torso') if 'torso' in d else
             _DEFAULT_TORSO if set(_DEFAULT_TORSO) <= set(d['joints'])
             else None),
      head=optional_pair('head'),
      oks_sigmas=(None if d.get('oks_sigmas') is None
                  else tuple(map(float, d['oks_sigmas']))),
      mirror_pairs=(None if d.get('mirror_pairs') is None
                    else _pairs(d['mirror_pairs'], 'mirror_pairs')),
      lower_body_joints=(None if d.get('lower_body') is None
                         else _names(d['lower_body'], 'lower_body')))


def _parts_from_dict(d: dict[str, Any]) -> PartSchema:
  """Classes from the stored labels, less ``ignore``, with ``merge`` applied.

  A merge target takes the place of its first label in file order; it may be
  one of the labels or a new name.
  """
  labels = _names(d['labels'], 'labels')
  if len(set(labels)) != len(labels):
    raise ValueError('duplicate label names')
  ignore = set(_names(d.get('ignore', []), 'ignore'))
  merge = d.get('merge', {})
  if not isinstance(merge, dict):
    raise ValueError('"merge" must map a class name to a list of labels')
  class_of_label = {}
  for target, sources in merge.items():
    for label in _names(sources, f'merge.{target}'):
      if label in class_of_label:
        raise ValueError(f'label {label!r} is merged twice')
      class_of_label[label] = target
  unknown = sorted((ignore | set(class_of_label)) - set(labels))
  if unknown:
    raise ValueError(f'ignore/merge name unknown labels {unknown}')
  classes: list[str] = []
  file_classes = []
  for label in labels:
    if label in ignore:
      file_classes.append(IGNORE_LABEL)
      continue
    cls = class_of_label.get(label, label)
    if cls not in classes:
      classes.append(cls)
    file_classes.append(classes.index(cls))
  colors = d.get('colors')
  if colors is not None:
    if isinstance(colors, dict):
      missing = sorted(set(classes) - set(colors))
      if missing:
        raise ValueError(f'"colors" has no colour for {missing}')
      colors = [colors[c] for c in classes]
    colors = tuple(tuple(int(v) for v in c) for c in colors)
  plain = not ignore and not merge
  return PartSchema(
      name=d['name'], label_names=tuple(classes), colors=colors,
      mirror_pairs=(None if d.get('mirror_pairs') is None
                    else _pairs(d['mirror_pairs'], 'mirror_pairs')),
      file_labels=None if plain else labels,
      file_classes=None if plain else tuple(file_classes))


def load_schema(path: str) -> Skeleton | PartSchema:
  """Reads a skeleton or part-schema JSON file (``docs/data.md``).

  Raises:
    errors.ConfigError: the file is missing or malformed; the message names
      the file and the problem.
  """
  d = json_file.read(path, 'schema file', errors.ConfigError)
  try:
    if not isinstance(d, dict):
      raise ValueError('expected a JSON object')
    kind = d.get('kind')
    known = {'skeleton': _SKELETON_FIELDS, 'parts': _PARTS_FIELDS}
    if kind not in known:
      raise ValueError('"kind" must be "skeleton" or "parts"')
    unknown = sorted(set(d) - known[kind])
    if unknown:
      raise ValueError(f'unknown field(s) {unknown}; a {kind} schema has '
                       f'{sorted(known[kind])}')
    missing = sorted({'joints' if kind == 'skeleton' else 'labels'} - set(d))
    if missing:
      raise ValueError(f'missing field(s) {missing}')
    d.setdefault('name', os.path.splitext(os.path.basename(path))[0])
    if kind == 'skeleton':
      return _skeleton_from_dict(d)
    return _parts_from_dict(d)
  except (ValueError, TypeError, KeyError) as e:
    raise errors.ConfigError(f'{path}: {e}') from None


def _builtin(name: str) -> Skeleton | PartSchema:
  return load_schema(os.path.join(_BUILTIN_DIR, name + '.json'))


COCO17 = _builtin('coco17')
MPII16 = _builtin('mpii16')
LSP14 = _builtin('lsp14')
BODY25 = _builtin('body25')  # OpenPose's, for the U-Net mask + joint models.
SKELETONS = {s.name: s for s in (COCO17, MPII16, LSP14, BODY25)}

BODY_PARTS6 = _builtin('parts6')  # The design's six (Pascal-Person-Part).
CIHP20 = _builtin('cihp20')  # CIHP / LIP 20-class human parsing.
PART_SCHEMAS = {s.name: s for s in (BODY_PARTS6, CIHP20)}


def _is_file(name: str) -> bool:
  return name.endswith('.json') or os.sep in name


def _get(name: str, kind: type, builtins: dict[str, Any], what: str):
  if _is_file(name):
    schema = load_schema(name)
    if not isinstance(schema, kind):
      raise errors.ConfigError(f'{name}: is not a {what} schema')
    return schema
  if name not in builtins:
    raise errors.ConfigError(f'unknown {what} {name!r}; known: '
                             f'{sorted(builtins)} or a .json schema file')
  return builtins[name]


def get_skeleton(name: str) -> Skeleton:
  """A built-in skeleton by name, or one from a schema file path."""
  return _get(name, Skeleton, SKELETONS, 'skeleton')


def get_part_schema(name: str) -> PartSchema:
  """A built-in part schema by name, or one from a schema file path."""
  return _get(name, PartSchema, PART_SCHEMAS, 'part')
