"""Pose models by name: config defaults and construction from a config.

A recipe's ``config.model`` starts from `default_config(name)`, which lists
every field of that model with its default, and the training loop turns it
into a Flax module with `build(config.model, num_joints)`. Fields map
one-to-one onto the module's constructor arguments, except ``dtype``, which
the config holds as a string ('float32' or 'bfloat16').
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from hpe_jax.models import cpm
from hpe_jax.models import hourglass

MODELS: dict[str, type[nn.Module]] = {
    'hourglass': hourglass.StackedHourglass,
    'cpm': cpm.ConvolutionalPoseMachine,
}

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}

# Constructor fields the config never sets: the joint count comes from the
# dataset's skeleton, the other two are Flax's own.
_NOT_CONFIGURABLE = frozenset({'num_joints', 'parent', 'name'})


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


def build(model_cfg: ml_collections.ConfigDict, num_joints: int) -> nn.Module:
  """The (unbound) model module described by `model_cfg`.

  Args:
    model_cfg: ``name`` plus any of the model's fields (see
      `default_config`); fields left out take the module's defaults.
    num_joints: heatmap channels.

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
  return model_class(num_joints=num_joints, **kwargs)
