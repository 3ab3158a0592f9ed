r"""U-Net person segmentation (Ronneberger et al., 2015; the design's recipe).

Without an argument: 4 levels down and up, 64 to 1024 channels, nearest
upsampling followed by a conv, dropout 0.3 between levels, a 2-class
per-pixel softmax (background / person) trained with soft Dice loss and
Adam at 2e-5, on whole 256x256 images of the built-in synthetic people
(letterboxed, so every batch has one shape):

  python -m hpe_jax.main --config=configs/unet.py --workdir=/tmp/unet

The design reports validation Dice 0.919 on its person data. Meant for a
GPU; not yet run here.

Arguments (comma-separated):

* ``smoke``: 16 to 256 channels, no dropout, 64x64 synthetic scenes,
  batch 16, 400 Adam steps at 2e-3 with Dice + cross-entropy. On 2 CPU
  cores: 3 minutes (177 s with evaluations); validation (100 images) mask
  Dice 0.002 untrained -> 0.543, mask IoU 0.001 -> 0.395.
* ``parts``: body parts instead of the person mask (background + the 6
  parts of the synthetic people); reports ``part_miou`` and
  ``part_iou/<part>``.
* ``coco``: COCO-2017 person masks (polygons and RLE) under
  ``--config.dataset.root``; ``cihp``, ``pascal_part``: their part maps
  (the model then predicts parts).

Options: ``--config.loss.dice_weight=0 --config.loss.ce_weight=1``
(cross-entropy instead of Dice, or any weighted sum),
``--config.model.upsample=transpose`` (transposed convs),
``--config.eval.flip=true`` (flip test).
"""

from hpe_jax.training import base_config

ARGS = ('smoke', 'parts') + base_config.SEGMENTATION_DATASETS


def get_config(arg=None):
  args = base_config.parse_args(arg, ARGS)
  config = base_config.get_segmentation_config('unet')
  config.model.update(features=64, levels=4, dropout_rate=0.3,
                      upsample='resize')

  base_config.use_segmentation_args(config, args)
  if 'smoke' in args:
    config.model.features = 16
    base_config.use_segmentation_smoke_schedule(config, total_steps=400)
  config.lock()
  return config
