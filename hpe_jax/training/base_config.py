"""The fields every training config has, with their defaults.

Recipes in ``configs/`` call `get_base_config(model_name)` and override what
their recipe changes; the result is locked, so a mistyped
``--config.some_key=...`` on the command line is an error.
"""

import ml_collections

from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.evaluation import keypoint_evaluator
from hpe_jax.models import registry
from hpe_jax.training import optimizers


def get_base_config(model_name: str) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = datasets.default_config()
  config.input = pipeline.default_config()
  config.model = registry.default_config(model_name)
  config.optimizer = optimizers.default_config()
  config.loss = ml_collections.ConfigDict(dict(
      sigma=2.0,  # heatmap Gaussian sigma, in output pixels
      stack_weights=(),  # per stack / stage; empty = 1 each
  ))
  config.eval = keypoint_evaluator.default_config()
  config.total_steps = 10_000
  config.log_every = 50
  config.eval_every = 1000  # 0: only after the last step
  config.eval_at_start = False  # also evaluate the untrained model
  config.checkpoint_every = 1000  # also after every evaluation
  config.keep_checkpoints = 3  # the latest ones, plus the best
  config.init_from = ''  # another run's workdir or checkpoint: its weights
  return config


def parse_args(arg: str | None, known: tuple[str, ...]) -> set[str]:
  """The comma-separated recipe arguments of ``--config=file.py:a,b``."""
  args = {a.strip() for a in (arg or '').split(',') if a.strip()}
  unknown = args - set(known)
  if unknown:
    raise ValueError(f'unknown config argument(s) {sorted(unknown)}; '
                     f'known: {list(known)}')
  return args


# Real datasets, each with the evaluation protocol that goes with it.
DATASETS = ('coco', 'mpii', 'lsp')


def use_dataset(config: ml_collections.ConfigDict, name: str) -> None:
  """Switches a keypoint recipe to a real dataset and its protocol."""
  config.dataset.name = name
  # No guess at where the data is: an unset root stops with a message
  # asking for --config.dataset.root.
  config.dataset.root = ''
  config.eval.flip = True


def use_smoke_schedule(config: ml_collections.ConfigDict, *, total_steps: int,
                       batch_size: int) -> None:
  """The CPU smoke run: short Adam schedule, evaluation before and after.

  Synthetic scenes (the default dataset) are drawn at 128x128 so that two
  cores spend their time on the model, not on drawing; the untrained model
  is evaluated too, to show that the run learns.
  """
  config.dataset.synthetic.update(num_train=2000, num_eval=100,
                                  image_size=(128, 128))
  config.optimizer.update(name='adam', learning_rate=2e-3)
  config.optimizer.schedule.update(name='cosine', warmup_steps=50)
  config.input.batch_size = batch_size
  config.input.eval_batch_size = 2 * batch_size
  config.total_steps = total_steps
  config.log_every = 50
  config.eval_every = 0
  config.eval_at_start = True
  config.checkpoint_every = 200
