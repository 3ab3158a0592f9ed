"""The data part of every config: seed, ``dataset`` and ``input`` sections.

Recipes in ``configs/`` start from `get_config()` and add model and training
fields. It is itself a config file, so the batch preview runs without a
recipe:

  python -m hpe_jax.data.show_batch --config=hpe_jax/data/config.py \
      --output=/tmp/batch.png
"""

import ml_collections

from hpe_jax.data import datasets
from hpe_jax.data import pipeline


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Data defaults; `arg` 'full_image' switches to whole-image samples."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = datasets.default_config()
  config.input = pipeline.default_config()
  if arg == 'full_image':
    config.input.mode = 'full_image'
  elif arg:
    raise ValueError(f'unknown config argument {arg!r}')
  config.lock()
  return config
