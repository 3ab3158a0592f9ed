r"""Pose-conditioned person-mask network (the design's recipe).

Each person is cropped, centred and scaled by the box to 256x256; the
network sees the crop and a pose map of the person's 14 LSP joints (COCO's
17 converted, with the head top estimated from the face) and predicts a
residual over the log-odds of a prior mask drawn from the skeleton; tanh
output, MSE loss, Adam. Scored by IoU with the person's mask; the prior
alone is scored too (``prior/mask_iou``), and ``python -m
hpe_jax.evaluation.grabcut_baseline --config=configs/pose_mask.py`` scores
OpenCV GrabCut seeded from the same skeleton on the same crops.

  python -m hpe_jax.main --config=configs/pose_mask.py --workdir=/tmp/pm

Meant for a GPU; not yet run here.

Arguments (comma-separated):

* ``smoke``: 16 channels after the first conv, 64x64 crops of 128x128
  synthetic scenes, batch 32, 400 Adam steps at 2e-3. On 2 CPU cores: 5.5
  minutes (329 s with evaluations); validation (199 people) mask IoU 0.683
  untrained (the prior alone) -> 0.719, Dice 0.800 -> 0.825. GrabCut on the
  same crops: IoU 0.735 (its skeleton seed alone: 0.645). BCE instead of
  MSE: 0.692.
* ``coco``: COCO-2017 people with masks and keypoints under
  ``--config.dataset.root``.
"""

from hpe_jax.training import base_config


def get_config(arg=None):
  args = base_config.parse_args(arg, ('smoke', 'coco'))
  config = base_config.get_base_config('pose_mask', 'pose_mask')
  config.dataset.skeleton = 'lsp14'
  config.model.update(features=32, levels=4)
  config.input.image_size = (256, 256)
  config.input.output_stride = 1
  # People need a pose to condition on.
  config.input.min_keypoints = 4
  config.optimizer.update(name='adam', learning_rate=1e-4)
  config.input.batch_size = 16
  config.total_steps = 50_000
  config.eval_every = 2500
  config.checkpoint_every = 2500

  if 'coco' in args:
    config.dataset.name = 'coco'
    config.dataset.root = ''
  if 'smoke' in args:
    config.model.features = 16
    config.input.image_size = (64, 64)
    base_config.use_smoke_schedule(config, total_steps=400, batch_size=32)
  config.lock()
  return config
