"""Draws a batch exactly as it reaches the model into a PNG.

  python -m hpe_jax.data.show_batch --config=configs/X.py[:arg] \
      --output=batch.png [--split=train] [--num_examples=16]

Each example is a row of panels: the input with its keypoints and skeleton
(hollow circles: hidden joints), the heatmap targets rendered by the same
jitted code the training step uses, the person mask, and the part map.
Skeletons are coloured by side (left blue, right orange, centre green); a
strip under the panels names the part labels present, with their colours.
Use it to check augmentation after changing the input config. The output
file's folder is made first.
"""

import os

from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from hpe_jax import cli
from hpe_jax import visualization
from hpe_jax.codecs import heatmap
from hpe_jax.data import datasets
from hpe_jax.data import pipeline

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file with dataset and input sections.',
    lock_config=True)
_OUTPUT = flags.DEFINE_string('output', 'batch.png', 'PNG to write.')
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'eval'],
                           'train: augmented batches; eval: plain crops.')
_NUM = flags.DEFINE_integer('num_examples', 8, 'Examples to draw.')
_SIGMA = flags.DEFINE_float(
    'sigma', None, 'Heatmap sigma in output pixels; default: the config\'s '
    'codec.sigma, or 2 for a data-only config.')


def draw_batch(batch, dataset, cfg, sigma: float, num: int) -> np.ndarray:
  """The preview image of the first `num` examples of a batch."""
  codec = heatmap.HeatmapCodec(sigma=sigma, stride=cfg.output_stride)
  out_size = batch['mask'].shape[1:3]
  kp = batch['keypoints']
  heat, _ = jax.jit(codec.encode, static_argnums=2)(
      kp[..., :2], kp[..., 2], tuple(out_size))
  heat = np.asarray(heat)
  schema = dataset.part_schema
  colors = None if schema is None else schema.colors
  shown_parts = batch['part_map'][:num]
  panels = []
  for i in range(len(shown_parts)):
    image = batch['image'][i]
    people = kp[i].reshape(-1, kp.shape[-2], 3)
    shown = np.concatenate(
        [codec.grid_to_input(people[..., :2]), people[..., 2:]], -1)
    first = image
    if dataset.skeleton is not None:
      first = visualization.draw_skeleton(image, shown, dataset.skeleton)
    first = visualization.put_text(
        first, f'id {batch["image_id"][i]}' +
        ('' if batch['valid'][i] else ' (invalid)'))
    # Full-image batches hold [N, h, w, K] heatmaps: one per person slot.
    heat_i = heat[i].max(0) if heat.ndim == 5 else heat[i]
    panels += [first, visualization.overlay_heatmaps(image, heat_i),
               visualization.overlay_labels(image, batch['mask'][i]),
               visualization.overlay_labels(image, shown_parts[i],
                                            colors=colors)]
  preview = visualization.grid(panels, columns=4)
  if schema is None:
    return preview
  return visualization.add_legend(preview, shown_parts, schema.label_names,
                                  colors)


def main(argv):
  del argv
  config = cli.config_value(_CONFIG)
  cli.output_folder(os.path.dirname(_OUTPUT.value) or '.')
  dataset = datasets.build(config.dataset, _SPLIT.value)
  if _SPLIT.value == 'train':
    ds = pipeline.train_dataset(dataset, config.input, seed=config.seed,
                                batch_size=_NUM.value)
  else:
    ds, _ = pipeline.eval_dataset(dataset, config.input,
                                  batch_size=_NUM.value)
  batch = next(iter(ds))
  sigma = _SIGMA.value or (config.codec.sigma if 'codec' in config else 2.0)
  image = draw_batch(batch, dataset, config.input, sigma, _NUM.value)
  visualization.save_png(_OUTPUT.value, image)
  print(f'wrote {_OUTPUT.value}: {len(batch["image"])} examples of '
        f'{dataset.name} ({config.input.mode}, {_SPLIT.value})')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  cli.run(main)
