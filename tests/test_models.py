"""Tests of the pose models and their registry, on tiny configs (CPU)."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hpe_jax.models import cpm
from hpe_jax.models import hourglass
from hpe_jax.models import registry

NUM_JOINTS = 5

# Tiny versions of each model with an input they accept, and the names of the
# first and last stage's parameter groups and of the stem.
TINY = {
    'hourglass': dict(
        config=dict(num_stacks=2, features=16, depth=2),
        input_size=(32, 48), stem='stem', first='hourglass_0',
        last='hourglass_1'),
    'cpm': dict(
        config=dict(num_stages=3, features=16, stage_kernel=3),
        input_size=(32, 40), stem='stage_1_features', first='stage_1',
        last='stage_3'),
}


def _build(name, **overrides):
  cfg = registry.default_config(name)
  cfg.update(TINY[name]['config'])
  cfg.update(overrides)
  return registry.build(cfg, NUM_JOINTS)


def _images(name, batch=3, seed=0):
  height, width = TINY[name]['input_size']
  return jax.random.normal(jax.random.key(seed), (batch, height, width, 3))


@functools.partial(jax.jit, static_argnames='model')
def _init(model, images):
  return model.init(jax.random.key(1), images, train=False)


# Jitted because running the layers op by op costs seconds per call.
@functools.partial(jax.jit, static_argnames=('model', 'train'))
def _apply(model, variables, images, train=True):
  """Heatmaps and the variables with `batch_stats` as the call left them."""
  out, updates = model.apply(variables, images, train=train,
                             mutable=['batch_stats'])
  return out['heatmaps'], {**variables, **updates}


def _num_params(variables):
  return sum(x.size for x in jax.tree.leaves(variables['params']))


def _group_grad_norm(grads, group):
  return sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[group]))


@pytest.fixture(scope='module', params=sorted(TINY))
def tiny(request):
  """(name, model, images, variables) with trained-once batch statistics."""
  name = request.param
  model = _build(name)
  images = _images(name)
  _, variables = _apply(model, _init(model, images), images)
  return name, model, images, variables


@pytest.mark.parametrize('stacks, depth, blocks, separable, size', [
    (1, 1, 1, False, (16, 24)),
    (2, 2, 2, True, (32, 48)),
    (3, 2, 1, False, (48, 32)),
])
def test_hourglass_output_shapes(stacks, depth, blocks, separable, size):
  model = hourglass.StackedHourglass(NUM_JOINTS, num_stacks=stacks,
                                     features=8, depth=depth,
                                     num_blocks=blocks, separable=separable)
  images = jnp.zeros((2, *size, 3))
  out = jax.eval_shape(
      lambda: model.apply(_init(model, images), images, train=False))
  assert model.output_stride == 4
  assert out['heatmaps'].shape == (stacks, 2, size[0] // 4, size[1] // 4,
                                   NUM_JOINTS)
  assert out['heatmaps'].dtype == jnp.float32


@pytest.mark.parametrize('stages, kernel, size', [
    (1, 3, (24, 16)),
    (3, 3, (32, 40)),
    (2, 4, (16, 16)),
])
def test_cpm_output_shapes(stages, kernel, size):
  model = cpm.ConvolutionalPoseMachine(NUM_JOINTS, num_stages=stages,
                                       features=8, stage_kernel=kernel)
  images = jnp.zeros((2, *size, 3))
  out = jax.eval_shape(
      lambda: model.apply(_init(model, images), images, train=False))
  assert model.output_stride == 8
  assert out['heatmaps'].shape == (stages, 2, size[0] // 8, size[1] // 8,
                                   NUM_JOINTS)
  assert out['heatmaps'].dtype == jnp.float32


def test_center_map_is_a_centred_symmetric_gaussian():
  maps = cpm.center_map((32, 48), sigma=6.0)
  assert maps.shape == (4, 6) and maps.dtype == np.float32
  np.testing.assert_allclose(maps, maps[::-1, ::-1], rtol=1e-6)
  # The crop centre lies on the corner shared by the four middle cells.
  middle = maps[1:3, 2:4]
  np.testing.assert_allclose(middle, middle.max(), rtol=1e-6)
  assert middle.max() == maps.max() and maps.min() < 0.01 * maps.max()


@pytest.mark.parametrize('name, model_class, fields', [
    ('hourglass', hourglass.StackedHourglass,
     {'num_stacks', 'features', 'depth', 'num_blocks', 'separable'}),
    ('cpm', cpm.ConvolutionalPoseMachine,
     {'num_stages', 'features', 'stage_kernel', 'center_sigma'}),
])
def test_default_config_round_trips_to_module_defaults(name, model_class,
                                                       fields):
  cfg = registry.default_config(name)
  assert set(cfg) == fields | {'name', 'dtype'}
  assert cfg.name == name and cfg.dtype == 'float32'
  model = registry.build(cfg, 17)
  assert isinstance(model, model_class)
  assert model == model_class(num_joints=17)


def test_build_passes_fields_and_converts_dtype():
  cfg = registry.default_config('hourglass')
  cfg.update(num_stacks=3, separable=True, dtype='bfloat16')
  model = registry.build(cfg, 16)
  assert (model.num_stacks, model.separable, model.num_joints) == (3, True, 16)
  assert model.dtype == jnp.bfloat16
  # Fields left out of the config take the module's defaults.
  model = registry.build(
      ml_collections.ConfigDict(dict(name='cpm', num_stages=2)), 14)
  assert model.num_stages == 2 and model.stage_kernel == 11


def test_build_rejects_unknown_name_field_and_dtype():
  cfg = registry.default_config('hourglass')
  cfg.name = 'resnet'
  with pytest.raises(ValueError, match="'resnet'.*'cpm', 'hnet_unet', 'hourglass'"):
    registry.build(cfg, 17)
  with pytest.raises(ValueError, match='known'):
    registry.default_config('resnet')

  cfg = registry.default_config('cpm')
  cfg.num_stacks = 2  # a hourglass field
  with pytest.raises(TypeError, match='num_stacks'):
    registry.build(cfg, 17)

  cfg = registry.default_config('cpm')
  cfg.dtype = 'float16'
  with pytest.raises(ValueError, match='float16'):
    registry.build(cfg, 17)


@pytest.mark.parametrize('name, size, multiple', [
    ('hourglass', (24, 32), 16),  # depth 2: 4 * 2**2
    ('hourglass', (32, 40), 16),
    ('cpm', (20, 24), 8),
])
def test_indivisible_input_raises(name, size, multiple):
  model = _build(name)
  images = jnp.zeros((1, *size, 3))
  with pytest.raises(ValueError, match=f'divisible by {multiple}'):
    jax.eval_shape(lambda: _init(model, images))


def test_eval_output_does_not_depend_on_the_rest_of_the_batch(tiny):
  _, model, images, variables = tiny
  alone, _ = _apply(model, variables, images[:1], train=False)
  in_batch, _ = _apply(model, variables, images, train=False)
  np.testing.assert_allclose(alone[:, 0], in_batch[:, 0], rtol=1e-5,
                             atol=1e-5)
  # Whereas in training the batch statistics couple the examples.
  alone, _ = _apply(model, variables, images[:1])
  in_batch, _ = _apply(model, variables, images)
  assert not np.allclose(alone[:, 0], in_batch[:, 0], rtol=1e-3, atol=1e-3)


def test_train_mode_updates_batch_stats_and_eval_mode_does_not(tiny):
  _, model, images, variables = tiny
  _, trained = _apply(model, variables, images)
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         variables['batch_stats'], trained['batch_stats'])
  assert all(jax.tree.leaves(changed))

  _, evaluated = _apply(model, variables, images, train=False)
  jax.tree.map(np.testing.assert_array_equal, variables['batch_stats'],
               evaluated['batch_stats'])


def test_bfloat16_compute_keeps_float32_params_and_output(tiny):
  name, model, images, variables = tiny
  model_bf16 = _build(name, dtype='bfloat16')
  assert model_bf16.dtype == jnp.bfloat16
  init_bf16 = jax.eval_shape(lambda: _init(model_bf16, images))
  assert {x.dtype for x in jax.tree.leaves(init_bf16)} == {
      jnp.dtype(jnp.float32)}

  reference, _ = _apply(model, variables, images, train=False)
  out, _ = _apply(model_bf16, variables, images, train=False)
  assert out.dtype == jnp.float32
  scale = float(jnp.abs(reference).max())
  assert float(jnp.abs(out - reference).max()) < 0.1 * scale
  # bfloat16 really was used: results are not float32-exact.
  assert not np.allclose(out, reference, rtol=1e-5, atol=1e-6 * scale)


def test_separable_hourglass_has_fewer_params():
  images = _images('hourglass', batch=1)
  counts = {}
  for separable in (False, True):
    model = _build('hourglass', separable=separable)
    counts[separable] = _num_params(
        jax.eval_shape(lambda m=model: _init(m, images)))
  assert counts[True] < 0.6 * counts[False]


def test_intermediate_supervision_reaches_the_right_stages(tiny):
  name, model, images, variables = tiny

  @jax.jit
  def first_and_last_stage_losses_grads(params):
    def losses(params):
      heatmaps, _ = _apply(model, {**variables, 'params': params}, images)
      return jnp.stack([jnp.mean(heatmaps[0] ** 2),
                        jnp.mean(heatmaps[-1] ** 2)])
    return jax.jacrev(losses)(params)

  grads = first_and_last_stage_losses_grads(variables['params'])
  first_loss = jax.tree.map(lambda g: g[0], grads)
  last_loss = jax.tree.map(lambda g: g[1], grads)
  names = TINY[name]
  # The final prediction's loss trains every stage, the first one included.
  assert _group_grad_norm(last_loss, names['first']) > 0
  assert _group_grad_norm(last_loss, names['stem']) > 0
  # The first stage's loss reaches the stem but no later stage.
  assert _group_grad_norm(first_loss, names['stem']) > 0
  assert _group_grad_norm(first_loss, names['last']) == 0


def test_jitted_train_step(tiny):
  _, model, images, variables = tiny

  @jax.jit
  def step(variables, images, target):
    def loss_fn(params):
      heatmaps, updated = _apply(
          model, {**variables, 'params': params}, images)
      return jnp.mean((heatmaps - target) ** 2), updated
    return jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])

  heatmaps, _ = _apply(model, variables, images)
  (loss, updated), grads = step(variables, images, jnp.zeros_like(heatmaps))
  np.testing.assert_allclose(loss, jnp.mean(heatmaps ** 2), rtol=1e-5)
  assert jax.tree.structure(grads) == jax.tree.structure(variables['params'])
  assert all(np.isfinite(g).all() and np.abs(g).sum() > 0
             for g in jax.tree.leaves(grads))
  assert jax.tree.structure(updated) == jax.tree.structure(variables)
