r"""Convolutional Pose Machines (Wei et al., CVPR 2016).

Without an argument: the paper's network, 6 stages of 128 features with
11x11 stage kernels, 368x368 input and 46x46 belief maps (stride 8, sigma 1
output pixel), a centre map as extra input, intermediate supervision at
every stage, here on the built-in synthetic people. Optimiser: Adam with a
cosine schedule (the paper used SGD at 8e-5, which needs far more steps):

  python -m hpe_jax.main --config=configs/cpm.py --workdir=/tmp/cpm

Arguments (comma-separated):

* ``smoke``: 3 stages of 32 features, 7x7 stage kernels, 96x96 crops of
  128x128 synthetic scenes, batch 16, 450 Adam steps. On 2 CPU cores: 7
  minutes (1.1 steps/s); validation PCK@0.2 (torso) 0.008 untrained ->
  0.216, PCKh@0.5 0.007 -> 0.150.
* ``lsp``: LSP + LSPET training, LSP test PCK@0.2 (torso) with flip test,
  the paper's protocol (published 84.3 at 368x368); ``--config.dataset.root``
  holds ``lsp/`` and ``lspet/``, like ``../shared/data``. Meant for a GPU;
  not yet run or reproduced here.
* ``mpii``, ``coco``: as in ``configs/hourglass.py``.
"""

from hpe_jax.training import base_config


def get_config(arg=None):
  args = base_config.parse_args(arg, ('smoke',) + base_config.DATASETS)
  config = base_config.get_base_config('cpm')
  config.model.update(num_stages=6, features=128, stage_kernel=11)
  config.input.image_size = (368, 368)
  config.input.output_stride = 8
  config.codec.sigma = 1.0
  config.optimizer.update(name='adam', learning_rate=5e-4)
  config.optimizer.schedule.update(name='cosine', warmup_steps=1000)
  config.input.batch_size = 16
  config.total_steps = 100_000
  config.eval_every = 5000
  config.checkpoint_every = 5000

  for name in args & set(base_config.DATASETS):
    base_config.use_dataset(config, name)
  if 'smoke' in args:
    config.model.update(num_stages=3, features=32, stage_kernel=7)
    config.input.image_size = (96, 96)
    base_config.use_smoke_schedule(config, total_steps=450, batch_size=16)
  config.lock()
  return config
