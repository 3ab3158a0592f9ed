"""Tests for the optimizers, schedules and parameter groups made from config."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from hpe_jax.training import optimizers


def _config(constant_lr=False, **overrides):
  cfg = optimizers.default_config()
  cfg.update(overrides)
  if constant_lr:
    cfg.schedule.name = 'constant'
  return cfg


def _groups(**groups):
  return ml_collections.ConfigDict(
      {name: dict(pattern=pattern, lr_mult=mult)
       for name, (pattern, mult) in groups.items()})


def _params():
  rng = np.random.default_rng(0)

  def layer():
    return {'kernel': jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            'bias': jnp.asarray(rng.normal(size=(4,)), jnp.float32)}

  return {'backbone': {'conv': layer(),
                       'norm': {'scale': jnp.full((4,), 1.5),
                                'bias': jnp.full((4,), 0.5)}},
          'head': layer()}


def _flat(tree):
  return [(optimizers.param_path(path), leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _update(tx, params, grads, steps=1):
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _schedule(total_steps=100, **schedule):
  cfg = _config(learning_rate=2.0)
  cfg.schedule.update(schedule)
  return optimizers.make_schedule(cfg, total_steps)


def test_warmup_then_cosine_to_end_factor():
  lr = _schedule(warmup_steps=10, end_factor=0.1)
  np.testing.assert_allclose(
      [lr(0), lr(5), lr(10), lr(55), lr(100), lr(150)],
      [0.0, 1.0, 2.0, 2.0 * (0.1 + 0.9 * 0.5), 0.2, 0.2], rtol=1e-6)


def test_step_decay_at_boundaries():
  lr = _schedule(name='step', boundaries=(30, 60), decay_factor=0.5)
  np.testing.assert_allclose([lr(0), lr(29), lr(30), lr(59), lr(60), lr(99)],
                             [2.0, 2.0, 1.0, 1.0, 0.5, 0.5])


def test_constant_with_warmup():
  lr = _schedule(name='constant', warmup_steps=4)
  np.testing.assert_allclose([lr(1), lr(4), lr(1000)], [0.5, 2.0, 2.0])


def test_schedule_returned_with_optimizer_is_the_base_schedule():
  cfg = _config(constant_lr=True, learning_rate=0.5,
                param_groups=_groups(head=('^head/', 2.0)))
  _, lr = optimizers.make_optimizer(cfg, 10)
  assert float(jax.jit(lr)(3)) == 0.5


@pytest.mark.parametrize('name', ['adam', 'sgd'])
def test_frozen_group_unchanged_and_stateless(name):
  cfg = _config(name=name, weight_decay=0.1, grad_clip_norm=1.0,
                param_groups=_groups(backbone=('^backbone/', 0.0)))
  params = _params()
  grads = jax.tree.map(jnp.ones_like, params)
  tx, _ = optimizers.make_optimizer(cfg, 100)
  new, state = _update(tx, params, grads, steps=3)
  for a, b in zip(jax.tree.leaves(params['backbone']),
                  jax.tree.leaves(new['backbone'])):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(params['head']['kernel'], new['head']['kernel'])
  # No optimizer statistics may be kept for the frozen group.
  inner = state[-1].inner_states
  assert not jax.tree.leaves(inner['backbone'])
  assert jax.tree.leaves(inner['default'])


def test_lr_mult_scales_sgd_updates_exactly():
  cfg = _config(constant_lr=True, name='sgd', momentum=0.0, learning_rate=0.3,
                param_groups=_groups(backbone=('^backbone/', 0.1)))
  params = {'backbone': {'kernel': jnp.zeros(5)},
            'head': {'kernel': jnp.zeros(5)}}
  grads = jax.tree.map(lambda p: jnp.arange(1.0, 6.0), params)
  tx, _ = optimizers.make_optimizer(cfg, 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['head']['kernel'],
                             -0.3 * np.arange(1.0, 6.0), rtol=1e-6)
  np.testing.assert_allclose(updates['backbone']['kernel'],
                             0.1 * updates['head']['kernel'], rtol=1e-6)


def test_rmsprop_adds_eps_outside_the_root_as_pytorch():
  cfg = _config(constant_lr=True, name='rmsprop', momentum=0.0,
                learning_rate=1.0, eps=0.1)
  params = {'w': jnp.zeros(1)}
  tx, _ = optimizers.make_optimizer(cfg, 10)
  updates, _ = tx.update({'w': jnp.full(1, 2.0)}, tx.init(params), params)
  # v = (1 - 0.99) * 2**2 = 0.04; update = -2 / (sqrt(v) + eps).
  np.testing.assert_allclose(updates['w'], [-2.0 / (0.2 + 0.1)], rtol=1e-6)


@pytest.mark.parametrize('name', optimizers.OPTIMIZERS)
def test_weight_decay_skips_biases_and_scales(name):
  cfg = _config(constant_lr=True, name=name, weight_decay=0.1,
                learning_rate=0.01, momentum=0.0)
  params = _params()
  tx, _ = optimizers.make_optimizer(cfg, 10)
  new, _ = _update(tx, params, jax.tree.map(jnp.zeros_like, params))
  after = dict(_flat(new))
  for path, before in _flat(params):
    if path.endswith(('bias', 'scale')):
      np.testing.assert_array_equal(after[path], before)
    else:
      # Decay moves every weight towards zero (adaptive optimizers rescale
      # the step, so only its direction is common to all four).
      assert np.all(np.sign(before) * (after[path] - before) < 0), path
  if name in ('sgd', 'adamw'):
    # With a zero gradient both are exactly p <- p (1 - lr * wd).
    np.testing.assert_allclose(new['head']['kernel'],
                               params['head']['kernel'] * (1 - 0.01 * 0.1),
                               rtol=1e-6)


def test_weight_decay_off_by_default():
  params = _params()
  tx, _ = optimizers.make_optimizer(_config(name='adamw'), 10)
  new, _ = _update(tx, params, jax.tree.map(jnp.zeros_like, params))
  jax.tree.map(np.testing.assert_array_equal, new, params)


def _update_norm(cfg, params, grads):
  tx, _ = optimizers.make_optimizer(cfg, 10)
  updates, _ = tx.update(grads, tx.init(params), params)
  return float(optax.tree.norm(updates)), updates


def test_clipping_bounds_the_global_update_norm():
  cfg = _config(constant_lr=True, name='sgd', momentum=0.0, learning_rate=1.0)
  params = _params()
  grads = jax.tree.map(lambda p: jnp.full_like(p, 10.0), params)
  unclipped, _ = _update_norm(cfg, params, grads)
  assert unclipped > 50
  cfg.grad_clip_norm = 2.0
  clipped, updates = _update_norm(cfg, params, grads)
  np.testing.assert_allclose(clipped, 2.0, rtol=1e-5)
  # The direction is kept: every element is scaled alike.
  np.testing.assert_allclose(updates['head']['kernel'],
                             -10.0 * 2.0 / unclipped, rtol=1e-5)


def test_frozen_gradients_do_not_count_in_the_clipping_norm():
  cfg = _config(constant_lr=True, name='sgd', momentum=0.0, learning_rate=1.0,
                grad_clip_norm=1.0,
                param_groups=_groups(backbone=('^backbone/', 0.0)))
  params = _params()
  grads = jax.tree.map(jnp.zeros_like, params)
  grads['backbone']['conv']['kernel'] += 100.0
  grads['head']['kernel'] = grads['head']['kernel'].at[0, 0].set(0.5)
  _, updates = _update_norm(cfg, params, grads)
  assert float(updates['head']['kernel'][0, 0]) == -0.5


class _TinyNet(nn.Module):

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (3, 3), name='conv')(x)
    x = nn.relu(nn.LayerNorm(name='norm')(x))
    return nn.Dense(2, name='head')(x.mean(axis=(1, 2)))


@pytest.mark.parametrize(
    'name, frozen_dict',
    [(name, False) for name in optimizers.OPTIMIZERS] + [('adamw', True)])
def test_each_optimizer_trains_a_flax_model_under_jit(name, frozen_dict):
  model = _TinyNet()
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  y = jax.random.normal(jax.random.key(1), (4, 2))
  params = model.init(jax.random.key(2), x)['params']
  if frozen_dict:
    params = flax.core.freeze(params)
  cfg = _config(name=name, learning_rate=0.01, weight_decay=1e-4,
                grad_clip_norm=5.0,
                param_groups=_groups(conv=('^conv/', 0.1)))
  cfg.schedule.warmup_steps = 2
  tx, _ = optimizers.make_optimizer(cfg, 30)

  def loss_fn(p):
    return jnp.mean((model.apply({'params': p}, x) - y) ** 2)

  @jax.jit
  def step(p, state):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, state = tx.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  state = tx.init(params)
  losses = []
  for _ in range(30):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert isinstance(params, flax.core.FrozenDict) == frozen_dict
  assert losses[-1] < 0.8 * losses[0]


def test_optimizer_state_round_trips_through_orbax(tmp_path):
  cfg = _config(name='adamw', grad_clip_norm=1.0,
                param_groups=_groups(backbone=('^backbone/', 0.0),
                                     conv=('conv', 0.1)))
  params = _params()
  tx, _ = optimizers.make_optimizer(cfg, 10)
  _, state = _update(tx, params, jax.tree.map(jnp.ones_like, params))
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / 'state', state)
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / 'state', state)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(np.testing.assert_array_equal, restored, state)


def test_labels_first_match_in_alphabetical_order_else_default():
  cfg = _config(param_groups=_groups(b_backbone=('^backbone/', 0.1),
                                     a_norm=('norm/', 0.5)))
  labels = optimizers.param_labels(flax.core.freeze(_params()), cfg)
  assert labels['backbone']['norm']['scale'] == 'a_norm'
  assert labels['backbone']['conv']['kernel'] == 'b_backbone'
  assert labels['head']['bias'] == optimizers.DEFAULT_GROUP


def test_group_listing_shows_every_group():
  cfg = _config(param_groups=_groups(backbone=('^backbone/', 0.1),
                                     typo=('^bakbone/', 0.0)))
  paths = optimizers.group_paths(_params(), cfg)
  assert paths == {
      'default': ['head/bias', 'head/kernel'],
      'backbone': ['backbone/conv/bias', 'backbone/conv/kernel',
                   'backbone/norm/bias', 'backbone/norm/scale'],
      'typo': []}
  text = optimizers.describe_param_groups(_params(), cfg, max_paths=1)
  assert text.splitlines() == [
      'default: lr x1, 2 arrays, 16 parameters [head/bias, ... (1 more)]',
      'backbone: lr x0.1, 4 arrays, 24 parameters '
      '[backbone/conv/bias, ... (3 more)]',
      'typo: lr x0, 0 arrays, 0 parameters []']


@pytest.mark.parametrize('overrides, message', [
    (dict(name='adagrad'), "optimizer.name must be one of .* 'adagrad'"),
    (dict(param_groups=_groups(default=('x', 1.0))), 'reserved'),
    (dict(param_groups=_groups(head=('x', -1.0))), 'lr_mult must be >= 0'),
    (dict(param_groups=_groups(head=('(', 1.0))), 'not a valid regex'),
])
def test_bad_optimizer_config_raises(overrides, message):
  with pytest.raises(ValueError, match=message):
    optimizers.make_optimizer(_config(**overrides), 10)


def test_unknown_schedule_raises():
  cfg = _config()
  cfg.schedule.name = 'linear'
  with pytest.raises(ValueError, match="schedule.name must be one of .* "
                     "'linear'"):
    optimizers.make_optimizer(cfg, 10)
