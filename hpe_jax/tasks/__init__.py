"""Tasks: what a model is trained to do, evaluated on and predicts.

``config.task`` names a task: one of the built-in ones below, each a module
of this package, or the dotted path of any importable module that defines
``TASK`` (a `base.Task` subclass), so a new task is one module:

* ``keypoints``: pose models (hourglass, CPM) on top-down crops;
* ``segmentation``: U-Net family on full images, person or part masks,
  optionally with joint heads;
* ``pose_mask``: the pose-conditioned person-mask network;
* ``part_rcnn``: the multi-person detector with per-person part masks and
  keypoints.

The trainer, the evaluate, predict and benchmark commands and the sweep
runner reach a task only through `get` / `make`.
"""

from __future__ import annotations

import importlib
import importlib.util

import ml_collections

from hpe_jax.tasks import base

BUILTIN = ('keypoints', 'segmentation', 'pose_mask', 'part_rcnn')


def get(name: str) -> type[base.Task]:
  """The task class `name` names (built-in, or a module path)."""
  if name in BUILTIN:
    module = importlib.import_module(f'hpe_jax.tasks.{name}')
  elif _importable(name):
    module = importlib.import_module(name)
  else:
    raise ValueError(f'task must be one of {BUILTIN} or the path of a '
                     f'module defining TASK, got {name!r}')
  task = getattr(module, 'TASK', None)
  if not (isinstance(task, type) and issubclass(task, base.Task)):
    raise ValueError(f'task {name!r}: module {module.__name__} defines no '
                     'TASK (a hpe_jax.tasks.base.Task subclass)')
  return task


def _importable(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):  # A missing parent package, or ''.
    return False


def make(config: ml_collections.ConfigDict) -> base.Task:
  """The task object of a run's config."""
  return get(config.task).from_config(config)


def default_loss_config(name: str) -> ml_collections.ConfigDict:
  """Every loss field of task `name` with its default."""
  return get(name).default_loss_config()
