"""The layers rewritten for CPU speed against the library ops they replace:
the 1x1 convolution with matrix-product gradients, and the 2x2 max-pool."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.models import layers
from hpe_jax.ops import pointwise_conv


def _reference_conv(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def test_pointwise_conv_and_its_gradients_match_lax_conv():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 5, 7, 6)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((1, 1, 6, 4)), jnp.float32)
  dy = jnp.asarray(rng.standard_normal((3, 5, 7, 4)), jnp.float32)

  def loss(conv):
    return lambda x, k: jnp.sum(conv(x, k) * dy)

  ours = lambda x, k: pointwise_conv.conv(x, k, (1, 1), 'SAME')
  np.testing.assert_allclose(ours(x, kernel), _reference_conv(x, kernel),
                             rtol=1e-5, atol=1e-5)
  got = jax.grad(loss(ours), argnums=(0, 1))(x, kernel)
  want = jax.grad(loss(_reference_conv), argnums=(0, 1))(x, kernel)
  for g, w in zip(got, want):
    assert g.shape == w.shape and g.dtype == w.dtype
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_layers_conv_keeps_parameters_and_computes_in_bfloat16():
  x = jnp.ones((2, 4, 4, 3), jnp.bfloat16)
  fast = layers.conv(5, 1, jnp.bfloat16)
  plain = nn.Conv(5, (1, 1), dtype=jnp.bfloat16)
  variables = fast.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, plain.init(jax.random.key(0), x))
  y, grads = jax.value_and_grad(
      lambda v: fast.apply(v, x).astype(jnp.float32).sum())(variables)
  assert fast.apply(variables, x).dtype == jnp.bfloat16
  assert grads['params']['kernel'].dtype == jnp.float32
  assert np.isfinite(float(y))


def test_pointwise_conv_refuses_other_convolutions():
  x, kernel = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
  with pytest.raises(ValueError, match='1x1'):
    pointwise_conv.conv(x, kernel, (1, 1), 'SAME')
  with pytest.raises(ValueError, match='stride-1'):
    pointwise_conv.conv(x, jnp.ones((1, 1, 2, 2)), (2, 2), 'SAME')


@pytest.mark.parametrize('shape', [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_max_pool2_matches_flax_max_pool_and_its_gradient(shape):
  # Random values: no ties, where the two gradients may differ.
  x = jnp.asarray(np.random.default_rng(1).standard_normal(shape),
                  jnp.float32)
  reference = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(layers.max_pool2(x), reference(x))
  weights = jnp.arange(reference(x).size, dtype=jnp.float32).reshape(
      reference(x).shape)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * weights))(x)
  np.testing.assert_array_equal(grad(layers.max_pool2), grad(reference))
