"""Pose models by name: config defaults and construction from a config.

A recipe's ``config.model`` starts from `default_config(name)`, which lists
every field of that model with its default, and the training loop turns it
into a Flax module with `build(config.model, skeleton)`. Fields map
one-to-one onto the module's constructor arguments, except ``dtype``, which
the config holds as a string ('float32' or 'bfloat16'), and the fields the
dataset's skeleton fixes: ``num_joints`` and, for models that draw the
skeleton (the pose-conditioned mask network), ``limbs``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from hpe_jax.data import skeletons
from hpe_jax.models import cpm
from hpe_jax.models import harmonic_unet
from hpe_jax.models import hourglass
from hpe_jax.models import part_rcnn
from hpe_jax.models import pose_mask_net
from hpe_jax.models import unet

MODELS: dict[str, type[nn.Module]] = {
    'hourglass': hourglass.StackedHourglass,
    'cpm': cpm.ConvolutionalPoseMachine,
    'unet': unet.UNet,
    'hnet_unet': harmonic_unet.HarmonicUNet,
    'pose_mask': pose_mask_net.PoseMaskNet,
    'part_rcnn': part_rcnn.PartRCNN,
}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# Constructor fields the config never sets: joints and limbs come from the
# dataset's skeleton, the other two are Flax's own.
_FROM_SKELETON = frozenset({'num_joints', 'limbs'})
_NOT_CONFIGURABLE = _FROM_SKELETON | {'parent', 'name'}


def _model_class(name: str) -> type[nn.Module]:
  if name not in MODELS:
    raise ValueError(f'unknown model {name!r}; known: {sorted(MODELS)}')
  return MODELS[name]


def _configurable_fields(model_class: type[nn.Module]) -> dict[str, Any]:
  """The constructor fields a config may set, with their defaults."""
  return {field.name: field.default
          for field in dataclasses.fields(model_class)
          if field.init and field.name not in _NOT_CONFIGURABLE}


def default_config(name: str) -> ml_collections.ConfigDict:
  """Every field of model `name` with its default, plus ``name`` itself."""
  fields = _configurable_fields(_model_class(name))
  fields['dtype'] = jnp.dtype(fields['dtype']).name
  return ml_collections.ConfigDict(dict(name=name, **fields))


def build(model_cfg: ml_collections.ConfigDict,
          skeleton: skeletons.Skeleton | int | None) -> nn.Module:
  """The (unbound) model module described by `model_cfg`.

  Args:
    model_cfg: ``name`` plus any of the model's fields (see
      `default_config`); fields left out take the module's defaults.
    skeleton: the dataset's skeleton (None: no keypoints), or just a joint
      count for models that do not draw limbs.

  Returns:
    The Flax module.

  Raises:
    ValueError: unknown model name or dtype.
    TypeError: a field the model does not have.
  """
  kwargs = dict(model_cfg.items())
  model_class = _model_class(kwargs.pop('name', None))
  known = _configurable_fields(model_class)
  unknown = sorted(set(kwargs) - set(known))
  if unknown:
    raise TypeError(f'model {model_cfg.name!r} has no field(s) {unknown}; '
                    f'known: {sorted(known)}')
  if 'dtype' in kwargs:
    if kwargs['dtype'] not in _DTYPES:
      raise ValueError(f'model dtype must be one of {sorted(_DTYPES)}, got '
                       f'{kwargs["dtype"]!r}')
    kwargs['dtype'] = _DTYPES[kwargs['dtype']]
  if isinstance(skeleton, int):
    kwargs['num_joints'] = skeleton
  else:
    kwargs['num_joints'] = 0 if skeleton is None else skeleton.num_joints
    if skeleton is not None and 'limbs' in {
        f.name for f in dataclasses.fields(model_class)}:
      kwargs['limbs'] = tuple(map(tuple, skeleton.limb_indices.tolist()))
  return model_class(**kwargs)


def build_for_run(config: ml_collections.ConfigDict,
                  skeleton: skeletons.Skeleton | int | None) -> nn.Module:
  """The model of a run's `config`, checked against its input stride."""
  model = build(config.model, skeleton)
  if model.output_stride != config.input.output_stride:
    raise ValueError(
        f'{config.model.name} predicts at stride {model.output_stride} but '
        f'input.output_stride is {config.input.output_stride}')
  return model
