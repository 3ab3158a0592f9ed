"""Image preprocessing inside the jitted step: uint8 in, normalised float out.

Batches cross to the device as uint8 (a quarter of float32's bytes) and are
normalised there.
"""

import jax.numpy as jnp

# ImageNet statistics, the usual choice for pose backbones.
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def normalize(images, dtype=jnp.float32):
  """uint8 [..., H, W, 3] RGB -> zero-mean, unit-variance `dtype` images."""
  x = jnp.asarray(images, jnp.float32)
  x = (x - jnp.asarray(MEAN_RGB)) / jnp.asarray(STD_RGB)
  return x.astype(dtype)
