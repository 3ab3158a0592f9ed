"""The fields every training config has, with their defaults.

Recipes in ``configs/`` call `get_base_config(model_name)` and override what
their recipe changes; the result is locked, so a mistyped
``--config.some_key=...`` on the command line is an error.
"""

import ml_collections

from hpe_jax import tasks
from hpe_jax.codecs import heatmap
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.models import registry
from hpe_jax.training import optimizers


def get_base_config(model_name: str,
                    task: str = 'keypoints') -> ml_collections.ConfigDict:
  """Defaults of every field for `model_name` trained on `task`."""
  task_class = tasks.get(task)
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = task  # see hpe_jax.tasks
  config.dataset = datasets.default_config()
  config.input = pipeline.default_config()
  config.model = registry.default_config(model_name)
  config.optimizer = optimizers.default_config()
  config.codec = heatmap.default_config()  # targets and decoding share it
  config.loss = task_class.default_loss_config()
  config.eval = task_class.default_eval_config()
  config.total_steps = 10_000
  config.log_every = 50
  config.eval_every = 1000  # 0: only after the last step
  config.eval_at_start = False  # also evaluate the untrained model
  config.checkpoint_every = 1000  # also after every evaluation
  config.keep_checkpoints = 3  # the latest ones, plus the best
  config.init_from = ''  # another run's workdir or checkpoint: its weights
  # On a non-finite loss, gradient or parameters: restore the latest
  # checkpoint and go on with the batches after the bad step, at most this
  # many times per process (0: stop the run).
  config.divergence_rollbacks = 0
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


# Real datasets with person masks or part maps for the segmentation recipes.
SEGMENTATION_DATASETS = ('coco', 'cihp', 'pascal_part')


def get_segmentation_config(model_name: str) -> ml_collections.ConfigDict:
  """The U-Net family's defaults: full images letterboxed to 256x256,
  masks at full resolution, Adam at 2e-5 (the design's), soft Dice loss."""
  config = get_base_config(model_name, 'segmentation')
  config.input.mode = 'full_image'
  config.input.image_size = (256, 256)
  config.input.output_stride = 1
  config.input.batch_size = 8
  config.input.eval_batch_size = 8
  config.optimizer.update(name='adam', learning_rate=2e-5)
  config.total_steps = 50_000
  config.eval_every = 2500
  config.checkpoint_every = 2500
  return config


def use_segmentation_dataset(config: ml_collections.ConfigDict,
                             name: str) -> None:
  """Switches a segmentation recipe to a real dataset: COCO person masks,
  or the part maps of CIHP / PASCAL-Part (then the model predicts parts)."""
  config.dataset.name = name
  config.dataset.root = ''
  if name != 'coco':
    use_part_targets(config, datasets.part_schema(config.dataset))


def use_segmentation_args(config: ml_collections.ConfigDict,
                          args: set[str]) -> None:
  """Applies the dataset arguments and ``parts`` of a U-Net-family recipe."""
  for name in args & set(SEGMENTATION_DATASETS):
    use_segmentation_dataset(config, name)
  if 'parts' in args:
    use_part_targets(config, datasets.part_schema(config.dataset))


def use_part_targets(config: ml_collections.ConfigDict, schema) -> None:
  """Trains the mask head on body parts (background + parts of `schema`)."""
  config.loss.mask_target = 'part_map'
  config.model.num_classes = schema.num_labels


def use_segmentation_smoke_schedule(config: ml_collections.ConfigDict, *,
                                    total_steps: int,
                                    batch_size: int = 16) -> None:
  """The CPU smoke run of a segmentation recipe: 64x64 synthetic scenes
  drawn at the model's input size, Dice + cross-entropy, no dropout, the
  untrained model evaluated too.

  Measured over 200 steps of the U-Net smoke run: validation Dice 0.51
  with Dice + cross-entropy, 0.49 with Dice alone, 0.06 with cross-entropy
  alone (it settles on background); dropout 0.3 slowed it down (0.38 after
  400 steps) and a run this short does not overfit.
  """
  use_smoke_schedule(config, total_steps=total_steps, batch_size=batch_size)
  config.dataset.synthetic.image_size = (64, 64)
  config.input.image_size = (64, 64)
  config.loss.ce_weight = 1.0
  config.model.dropout_rate = 0.0
