"""Tests of the harmonic layers and the harmonic U-Net: rotation equivariance.

Rotations follow `harmonic`'s convention: theta = k * 90 degrees is
``np.rot90(a, k, axes=(2, 1))`` on [B, H, W, ...] arrays, and order-m
features pick up a factor e^{i m theta}. Every equivariance check runs the
k = 0..3 rotations of one input as a batch of four, in one call.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import ndimage

from hpe_jax.models import harmonic
from hpe_jax.models import harmonic_unet

TOLERANCE = 1e-5

# Threefry keys make jitted `init` compile for seconds per model; parameter
# initialisation needs no particular generator.
KEY = jax.random.key(0, impl='rbg')


def _rotate(a, k):
  """Rotates [B, H, W, ...] arrays by k * 90 degrees (harmonic's sense)."""
  return np.rot90(np.asarray(a), k, axes=(2, 1))


def _complex(x):
  """[B, H, W, M, 2, C] features as complex [B, H, W, M, C]."""
  x = np.asarray(x, np.float64)
  return x[..., 0, :] + 1j * x[..., 1, :]


def _real(z):
  return np.stack([z.real, z.imag], axis=-2).astype(np.float32)


def _rotate_features(x, k, orders, sign=1):
  """Rotated features; order m times e^{i sign m theta}, theta = k * 90 degrees."""
  phase = np.exp(1j * sign * np.asarray(orders) * k * np.pi / 2)
  return _rotate(_complex(x), k) * phase[:, None]


def _rotations(x, orders):
  """The four 90-degree rotations of one input, as a batch of four."""
  return np.concatenate([_real(_rotate_features(x, k, orders))
                         for k in range(4)])


def _equivariance_error(outputs, orders, sign=1, rotations=range(4)):
  """Max |f(rotated) - rotated f| over the max |f|, for a batch of four."""
  outputs = _complex(outputs)
  scale = np.abs(outputs[:1]).max()
  return max(
      np.abs(outputs[k:k + 1]
             - _rotate_features(_real(outputs[:1]), k, orders, sign)).max()
      for k in rotations) / scale


def _random_features(orders, channels, size=12, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(1, size, size, len(orders), 2, channels)).astype(
      np.float32)


@functools.partial(jax.jit, static_argnames='model')
def _train_apply(model, variables, inputs):
  return model.apply(variables, inputs, train=True, mutable=['batch_stats'])


def _calibrate_batch_norm(model, variables, inputs, seed=0):
  """Random BatchNorm scales and offsets, running stats from `inputs`.

  At initialisation BN(|z|) = |z| in eval mode and the ReLU never clips;
  arbitrary running stats instead clip everything a few layers down. With
  the stats of real activations the nonlinearity acts at every layer.
  """
  rng = np.random.default_rng(seed)

  def randomise(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'BatchNorm' not in name:
      return leaf
    low, high = (0.5, 1.5) if "'scale'" in name else (-0.5, 0.5)
    return rng.uniform(low, high, leaf.shape).astype(np.float32)

  variables = {
      'params': jax.tree_util.tree_map_with_path(randomise,
                                                 variables['params']),
      'batch_stats': variables['batch_stats']}
  _, updates = _train_apply(model, variables, inputs)
  # One update with momentum 0.9: new = 0.9 old + 0.1 batch.
  stats = jax.tree.map(lambda new, old: (new - 0.9 * old) / 0.1,
                       updates['batch_stats'], variables['batch_stats'])
  return {**variables, 'batch_stats': stats}


@pytest.mark.parametrize('in_orders,out_orders,kernel_size', [
    ((0,), (0, 1), 3),
    ((0, 1), (0, 1), 3),
    ((0, 1), (-1, 0, 2), 3),
    ((0, 1), (0, 1), 5),
])
def test_conv_is_equivariant_to_90_degree_rotations(in_orders, out_orders,
                                                    kernel_size):
  conv = harmonic.HarmonicConv(3, in_orders, out_orders, kernel_size)
  x = _random_features(in_orders, channels=2)
  params = conv.init(KEY, x)
  outputs = conv.apply(params, _rotations(x, in_orders))
  error = _equivariance_error(outputs, out_orders)
  print(f'90-degree max relative error {in_orders}->{out_orders} '
        f'k={kernel_size}: {error:.2e}')
  assert error < TOLERANCE


def test_flipped_phase_convention_fails():
  orders = (0, 1)
  conv = harmonic.HarmonicConv(3, orders, orders)
  x = _random_features(orders, channels=2)
  outputs = conv.apply(conv.init(KEY, x), _rotations(x, orders))
  assert _equivariance_error(outputs, orders) < TOLERANCE
  # Rotations by 90 and 270 degrees, where e^{-i theta} != e^{i theta}.
  odd = (1, 3)
  assert _equivariance_error(outputs, orders, sign=-1, rotations=odd) > 0.5
  assert _equivariance_error(outputs, orders, sign=0, rotations=odd) > 0.5


class _Stack(nn.Module):
  orders: tuple[int, ...]

  @nn.compact
  def __call__(self, x, train):
    x = harmonic.HarmonicConv(4, self.orders, self.orders)(x)
    x = harmonic.MagnitudeBNReLU()(x, train)
    return harmonic.upsample2(harmonic.max_pool2(x))


def test_conv_bn_relu_pool_upsample_is_equivariant():
  orders = (0, 1)
  stack = _Stack(orders)
  x = _random_features(orders, channels=3)
  variables = _calibrate_batch_norm(
      stack, stack.init(KEY, x, train=False), x)
  outputs = stack.apply(variables, _rotations(x, orders), train=False)
  # The ReLU must clip some magnitudes, or the test misses the nonlinearity.
  assert 0.1 < np.mean(np.asarray(outputs) == 0) < 0.9
  error = _equivariance_error(outputs, orders)
  print(f'90-degree max relative error, conv-BN-ReLU-pool-up: {error:.2e}')
  assert error < TOLERANCE


def _tiny_unet(**overrides):
  fields = dict(num_classes=3, features=8, levels=2, joint_head='both',
                dropout_rate=0.0)
  fields.update(overrides)
  return harmonic_unet.HarmonicUNet(num_joints=4, **fields)


# Every UNet test calls it on [4, 16, 16, 3] images: one compile per model.
@functools.partial(jax.jit, static_argnames='model')
def _apply(model, variables, images):
  return model.apply(variables, images, train=False)


def _images(size=16, batch=1, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(batch, size, size, 3)).astype(np.float32)


@pytest.fixture(scope='module')
def unet():
  model = _tiny_unet()
  images = _images(batch=4, seed=1)
  variables = jax.jit(functools.partial(model.init, train=False))(
      KEY, images)
  return model, _calibrate_batch_norm(model, variables, images)


def test_unet_is_equivariant_to_90_degree_rotations(unet):
  model, variables = unet
  images = _images()
  rotated = np.concatenate([_rotate(images, k) for k in range(4)])
  outputs = _apply(model, variables, rotated)
  assert set(outputs) == {'mask_logits', 'joint_heatmaps', 'joint_logits'}
  for name, out in outputs.items():
    out = np.asarray(out)
    # Outputs constant over the image would be equivariant trivially.
    assert out.std(axis=(1, 2)).min() > 0.05 * out.std()
    error = max(np.abs(out[k] - _rotate(out[:1], k)[0]).max()
                for k in range(4)) / np.abs(out[0]).max()
    print(f'HarmonicUNet {name}: 90-degree max relative error {error:.2e}')
    assert error < TOLERANCE


def test_layers_are_odd_but_the_unet_tells_an_image_from_its_negative(unet):
  orders = (0, 1)
  stack = _Stack(orders)
  x = _random_features(orders, channels=3)
  variables = _calibrate_batch_norm(stack, stack.init(KEY, x, train=False),
                                    x)
  np.testing.assert_allclose(stack.apply(variables, -x, train=False),
                             -stack.apply(variables, x, train=False),
                             atol=1e-6)
  model, variables = unet
  images = _images(batch=2)
  logits = _apply(model, variables, np.concatenate([images, -images]))[
      'mask_logits']
  assert np.abs(logits[:2] - logits[2:]).max() > 0.1 * np.abs(logits).max()


def _rotate_45(a):
  return ndimage.rotate(a, 45, axes=(2, 1), reshape=False, order=1)


def test_conv_is_nearly_equivariant_to_45_degree_rotations():
  size, channels = 48, 8
  rng = np.random.default_rng(0)
  # Smooth, so bilinear resampling and the 3x3 grid lose little.
  images = ndimage.gaussian_filter(rng.normal(size=(1, size, size, 3)),
                                   (0, 2, 2, 0)).astype(np.float32)
  images /= images.std()
  y, x = np.mgrid[:size, :size] - (size - 1) / 2
  # Away from the corners the rotation fills with zeros.
  disk = np.hypot(x, y) < size / 2 - 6

  def relative_error(f):
    a = np.asarray(f(_rotate_45(images)))[:, disk]
    b = _rotate_45(np.asarray(f(images)))[:, disk]
    return np.linalg.norm(a - b) / np.linalg.norm(b)

  conv = harmonic.HarmonicConv(channels, harmonic.REAL_ORDERS, (0, 1))
  params = conv.init(KEY, harmonic.from_real(images))

  def order_0_magnitudes(im):
    return harmonic.magnitudes(conv.apply(params, harmonic.from_real(im)))[
        ..., :channels]

  plain = nn.Conv(channels, (3, 3), use_bias=False)
  plain_params = plain.init(KEY, images)
  harmonic_error = relative_error(order_0_magnitudes)
  plain_error = relative_error(functools.partial(plain.apply, plain_params))
  print(f'45-degree relative error: harmonic {harmonic_error:.3f}, '
        f'plain 3x3 conv {plain_error:.3f}')
  assert harmonic_error < 0.1
  assert plain_error > 3 * harmonic_error


def test_layer_shapes_and_parameters():
  images = _images(size=8, batch=2)
  features = harmonic.from_real(images)
  assert features.shape == (2, 8, 8, 1, 2, 3)
  np.testing.assert_array_equal(features[..., 0, 0, :], images)
  np.testing.assert_array_equal(features[..., 0, 1, :], 0)
  conv = harmonic.HarmonicConv(4, harmonic.REAL_ORDERS, (0, 1))
  params = conv.init(KEY, features)
  # 3 rings (radii 0, 1, sqrt 2) for order 0, 2 for order 1 (no centre),
  # and one phase per channel pair and order pair.
  num_params = sum(p.size for p in jax.tree.leaves(params))
  assert num_params == (3 + 2) * 3 * 4 + 2 * 3 * 4
  out = conv.apply(params, features)
  assert out.shape == (2, 8, 8, 2, 2, 4)
  assert harmonic.magnitudes(out).shape == (2, 8, 8, 8)
  assert harmonic.max_pool2(out).shape == (2, 4, 4, 2, 2, 4)
  assert harmonic.upsample2(out).shape == (2, 16, 16, 2, 2, 4)
  with pytest.raises(ValueError, match='odd'):
    harmonic.HarmonicConv(4, (0,), (0,), kernel_size=4).init(
        KEY, features)
  with pytest.raises(ValueError, match='in_orders'):
    conv.init(KEY, out)


def test_max_pool_keeps_the_largest_complex_value():
  z = np.zeros((1, 2, 2, 1, 1), np.complex64)
  z[0, :, :, 0, 0] = [[1 + 1j, -2j], [0.5, -1 - 0.5j]]
  pooled = _complex(harmonic.max_pool2(_real(z)))
  np.testing.assert_allclose(pooled[0, 0, 0, 0, 0], -2j)


def test_dropout_drops_whole_complex_values():
  x = jnp.ones((2, 8, 8, 2, 2, 16))
  dropped = harmonic.dropout(0.5, train=True).apply(
      {}, x, rngs={'dropout': KEY})
  np.testing.assert_array_equal(dropped[..., 0, :], dropped[..., 1, :])
  assert 0.3 < np.mean(np.asarray(dropped) == 0) < 0.7
  np.testing.assert_array_equal(harmonic.dropout(0.5, train=False).apply(
      {}, x), x)


def test_unet_outputs(unet):
  model, variables = unet
  outputs = _apply(model, variables, _images(batch=4))
  assert outputs['mask_logits'].shape == (4, 16, 16, 3)
  assert outputs['joint_heatmaps'].shape == (4, 16, 16, 4)
  assert outputs['joint_logits'].shape == (4, 16, 16, 5)
  for out in outputs.values():
    assert out.dtype == jnp.float32
  assert all(p.dtype == jnp.float32
             for p in jax.tree.leaves(variables['params']))
  assert harmonic_unet.HarmonicUNet.output_stride == 1


def test_unet_computes_in_bfloat16(unet):
  model, variables = unet
  images = _images(batch=4)
  reference = np.asarray(_apply(model, variables, images)['mask_logits'])
  logits = _apply(model.clone(dtype=jnp.bfloat16), variables, images)[
      'mask_logits']
  assert logits.dtype == jnp.float32
  error = np.abs(logits - reference).max()
  assert error < 0.1 * np.abs(reference).max()


def test_unet_rejects_bad_inputs_and_fields():
  images = _images(size=18)
  with pytest.raises(ValueError, match='divisible by 4'):
    _tiny_unet().init(KEY, images, train=False)
  images = _images(size=16)
  with pytest.raises(ValueError, match='divide evenly'):
    _tiny_unet(features=9).init(KEY, images, train=False)
  with pytest.raises(ValueError, match='distinct'):
    _tiny_unet(orders=(1, 1)).init(KEY, images, train=False)


def test_unet_training_lowers_the_loss():
  model = harmonic_unet.HarmonicUNet(num_joints=1, features=4, levels=1)
  rng = np.random.default_rng(0)
  # A bright disk per image, to be segmented from noise.
  y, x = np.mgrid[:16, :16]
  centres = rng.uniform(5, 11, size=(4, 2, 1, 1))
  radii = rng.uniform(2.5, 4.5, size=(4, 1, 1))
  labels = (np.hypot(y - centres[:, 0], x - centres[:, 1]) < radii).astype(
      np.int32)
  images = (labels[..., None] + 0.3 * rng.normal(size=(4, 16, 16, 3))).astype(
      np.float32)
  variables = jax.jit(functools.partial(model.init, train=False))(
      KEY, images)
  optimizer = optax.adam(3e-2)

  @jax.jit
  def step(params, batch_stats, opt_state, key):
    def loss_fn(params):
      out, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats}, images, train=True,
          mutable=['batch_stats'], rngs={'dropout': key})
      loss = optax.softmax_cross_entropy_with_integer_labels(
          out['mask_logits'], labels).mean()
      return loss, updates['batch_stats']
    (loss, batch_stats), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), batch_stats, opt_state, loss

  params, batch_stats = variables['params'], variables['batch_stats']
  opt_state = optimizer.init(params)
  losses = []
  for i in range(15):
    params, batch_stats, opt_state, loss = step(
        params, batch_stats, opt_state, jax.random.fold_in(KEY, i))
    losses.append(float(loss))
  print(f'training loss {losses[0]:.3f} -> {losses[-1]:.3f}')
  assert np.isfinite(losses).all()
  assert np.mean(losses[-3:]) < 0.6 * losses[0]
