"""Optimizers, learning-rate schedules and parameter groups from a config.

`make_optimizer(config.optimizer, total_steps)` turns the `optimizer` section
of a recipe into one optax transformation for the whole parameter tree, plus
the base learning-rate schedule for logging. The transformation runs, in
order:

1. Gradient clipping by the global norm over all trained parameters
   (`grad_clip_norm`, 0 = off). Frozen groups (`lr_mult` 0) are left out of
   the norm: their gradients update nothing, just as frozen PyTorch
   parameters have no gradient at all.
2. L2 weight decay for adam, rmsprop and sgd: `weight_decay * param` is added
   to the gradient before the optimizer sees it (PyTorch's `weight_decay`).
   adamw instead decays the weights directly, decoupled from the gradient
   statistics and scaled by the learning rate (Loshchilov & Hutter). Either
   way parameters whose path matches a `weight_decay_exclude` regex (biases,
   normalisation scales) are not decayed.
3. The optimizer itself, one per parameter group, each with the base
   schedule times the group's `lr_mult`. A group with `lr_mult` 0 is frozen
   with `optax.set_to_zero()`, so it keeps no optimizer state.

Parameters are named by their '/'-joined path in the tree (e.g.
``backbone/stage1/conv/kernel``); group patterns and decay exclusions are
regexes searched (`re.search`) in that path. A parameter belongs to the first
group whose pattern matches, taking groups in **alphabetical order of their
names** (ConfigDict keeps its keys sorted, not in insertion order); matching
no group puts it in the 'default' group (lr_mult 1). The state is a plain
optax pytree, so Orbax checkpoints it as it is.
"""

from __future__ import annotations

from collections.abc import Callable
import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('adam', 'adamw', 'rmsprop', 'sgd')
SCHEDULES = ('cosine', 'step', 'constant')
DEFAULT_GROUP = 'default'

Schedule = Callable[[Any], jax.Array]


def default_config() -> ml_collections.ConfigDict:
  """Optimizer defaults; recipes override them under ``config.optimizer``."""
  return ml_collections.ConfigDict(dict(
      name='adam',  # one of OPTIMIZERS
      learning_rate=1e-3,  # peak, reached at the end of warm-up
      b1=0.9,  # adam / adamw
      b2=0.999,  # adam / adamw
      eps=1e-8,  # adam / adamw / rmsprop (added to the RMS, as PyTorch)
      momentum=0.9,  # sgd / rmsprop; 0 = no momentum
      rmsprop_decay=0.99,  # rmsprop's moving-average decay (PyTorch alpha)
      weight_decay=0.0,  # 0 = off; decoupled for adamw, L2 otherwise
      weight_decay_exclude=('bias$', 'scale$'),  # regexes: not decayed
      grad_clip_norm=0.0,  # 0 = off; clip by the global norm
      schedule=ml_collections.ConfigDict(dict(
          name='cosine',  # one of SCHEDULES
          warmup_steps=0,  # linear from 0 to the peak over these steps
          end_factor=0.0,  # cosine: final lr as a fraction of the peak
          boundaries=(),  # step: from each of these steps on, lr *= factor
          decay_factor=0.1,  # step
      )),
      # name -> ConfigDict(pattern=regex on the param path, lr_mult=float);
      # a parameter joins the first match, groups in alphabetical order.
      param_groups=ml_collections.ConfigDict(),
  ))


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int
                  ) -> Schedule:
  """The base learning rate as a function of the update count.

  The count is optax's: the number of updates already applied, so the first
  update uses `schedule(0)` (0 when there is a warm-up).

  Args:
    cfg: the optimizer config (`learning_rate` and `schedule`).
    total_steps: length of training; the cosine ends there.

  Returns:
    A jit-able function of the step giving a float32 learning rate.
  """
  sched = cfg.schedule
  if sched.name not in SCHEDULES:
    raise ValueError(f'optimizer.schedule.name must be one of {SCHEDULES}, '
                     f'got {sched.name!r}')
  if sched.warmup_steps < 0:
    raise ValueError(f'optimizer.schedule.warmup_steps must be >= 0, got '
                     f'{sched.warmup_steps}')
  peak = cfg.learning_rate
  warmup = sched.warmup_steps
  # The cosine spans what is left after warm-up; at least one step so that a
  # run no longer than its warm-up still gets a well-defined schedule.
  decay_steps = max(total_steps - warmup, 1)
  end = sched.end_factor
  boundaries = jnp.asarray(sched.boundaries, jnp.float32)
  factor = sched.decay_factor

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    if sched.name == 'cosine':
      t = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
      scale = end + (1 - end) * 0.5 * (1 + jnp.cos(math.pi * t))
    elif sched.name == 'step':
      scale = factor ** jnp.sum(step >= boundaries)
    else:
      scale = jnp.float32(1.0)
    if warmup:
      scale = scale * jnp.minimum(step / warmup, 1.0)
    return (peak * scale).astype(jnp.float32)

  return schedule


def param_path(path) -> str:
  """'/'-joined name of a parameter from its jax key path."""
  return jax.tree_util.keystr(path, simple=True, separator='/')


def _groups(cfg: ml_collections.ConfigDict):
  """(name, compiled pattern, lr_mult) per configured group, in match order."""
  groups = []
  for name, group in cfg.param_groups.items():
    if name == DEFAULT_GROUP:
      raise ValueError(f'optimizer.param_groups: {DEFAULT_GROUP!r} is '
                       'reserved for the parameters no group matches')
    missing = {'pattern', 'lr_mult'} - set(group.keys())
    if missing:
      raise ValueError(f'optimizer.param_groups.{name} lacks {sorted(missing)}')
    if group.lr_mult < 0:
      raise ValueError(f'optimizer.param_groups.{name}.lr_mult must be >= 0, '
                       f'got {group.lr_mult}')
    try:
      pattern = re.compile(group.pattern)
    except re.error as e:
      raise ValueError(f'optimizer.param_groups.{name}.pattern '
                       f'{group.pattern!r} is not a valid regex: {e}') from e
    groups.append((name, pattern, float(group.lr_mult)))
  return groups


def param_labels(params, cfg: ml_collections.ConfigDict):
  """The tree of group names, one per parameter array, matching `params`."""
  groups = _groups(cfg)

  def label(path, _):
    name = param_path(path)
    return next((group for group, pattern, _ in groups
                 if pattern.search(name)), DEFAULT_GROUP)

  return jax.tree_util.tree_map_with_path(label, params)


def group_paths(params, cfg: ml_collections.ConfigDict) -> dict[str, list[str]]:
  """Parameter paths per group: 'default' first, then the configured groups.

  Groups that match no parameter are listed empty, so a mistyped pattern
  shows up in the start-up log.
  """
  paths = {DEFAULT_GROUP: [], **{name: [] for name, _, _ in _groups(cfg)}}
  labelled = jax.tree_util.tree_flatten_with_path(param_labels(params, cfg))[0]
  for path, group in labelled:
    paths[group].append(param_path(path))
  return paths


def describe_param_groups(params, cfg: ml_collections.ConfigDict,
                          max_paths: int = 4) -> str:
  """One line per group (lr multiplier, size, first paths) for the log."""
  mults = {name: mult for name, _, mult in _groups(cfg)}
  sizes = {param_path(path): math.prod(jnp.shape(leaf)) for path, leaf
           in jax.tree_util.tree_flatten_with_path(params)[0]}
  lines = []
  for group, paths in group_paths(params, cfg).items():
    shown = ', '.join(paths[:max_paths])
    more = f', ... ({len(paths) - max_paths} more)' if (
        len(paths) > max_paths) else ''
    lines.append(
        f'{group}: lr x{mults.get(group, 1.0):g}, {len(paths)} arrays, '
        f'{sum(sizes[p] for p in paths):,} parameters [{shown}{more}]')
  return '\n'.join(lines)


def _decay_mask(cfg: ml_collections.ConfigDict):
  """Callable giving True for parameters that weight decay applies to."""
  excluded = [re.compile(p) for p in cfg.weight_decay_exclude]

  def mask(params):
    # Inside multi_transform, other groups' leaves arrive as leafless
    # MaskedNodes, which tree_map_with_path leaves as they are.
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(p.search(param_path(path)) for p in excluded),
        params)

  return mask


def _base_optimizer(cfg: ml_collections.ConfigDict, learning_rate: Schedule
                    ) -> optax.GradientTransformation:
  if cfg.name == 'adam':
    return optax.adam(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  if cfg.name == 'adamw':
    return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay, mask=_decay_mask(cfg))
  # A momentum of 0 is no momentum: None keeps optax from storing a trace.
  momentum = cfg.momentum or None
  if cfg.name == 'rmsprop':
    return optax.rmsprop(learning_rate, decay=cfg.rmsprop_decay, eps=cfg.eps,
                         eps_in_sqrt=False, momentum=momentum)
  return optax.sgd(learning_rate, momentum=momentum)


def _scaled(schedule: Schedule, mult: float) -> Schedule:
  return lambda step: mult * schedule(step)


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int
                   ) -> tuple[optax.GradientTransformation, Schedule]:
  """The optimizer for a whole Flax parameter tree, and its base schedule.

  Args:
    cfg: the optimizer config (`default_config()` with recipe overrides).
    total_steps: number of training updates (for the cosine schedule).

  Returns:
    (transformation, schedule): the transformation works on plain dicts and
    FrozenDicts alike and can be used under jit; `schedule(step)` is the
    learning rate of the 'default' group, for logging.
  """
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f'optimizer.name must be one of {OPTIMIZERS}, got '
                     f'{cfg.name!r}')
  schedule = make_schedule(cfg, total_steps)
  groups = _groups(cfg)
  labels = functools.partial(param_labels, cfg=cfg)
  frozen = {name for name, _, mult in groups if mult == 0}

  stages = []
  if cfg.grad_clip_norm > 0:
    if frozen:
      stages.append(optax.masked(
          optax.set_to_zero(),
          lambda params: jax.tree.map(lambda g: g in frozen, labels(params))))
    stages.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
  if cfg.weight_decay > 0 and cfg.name != 'adamw':
    stages.append(optax.add_decayed_weights(cfg.weight_decay,
                                            mask=_decay_mask(cfg)))
  if groups:
    transforms = {DEFAULT_GROUP: _base_optimizer(cfg, schedule)}
    for name, _, mult in groups:
      transforms[name] = (optax.set_to_zero() if mult == 0 else
                          _base_optimizer(cfg, _scaled(schedule, mult)))
    stages.append(optax.multi_transform(transforms, labels))
  else:
    stages.append(_base_optimizer(cfg, schedule))
  return optax.chain(*stages), schedule
