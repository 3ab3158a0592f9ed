r"""Stacked hourglass (Newell et al., ECCV 2016).

Without an argument: the paper's recipe, 8 stacks of 256 features, depth 4,
256x256 input and 64x64 heatmaps (sigma 2), RMSprop at 2.5e-4, intermediate
supervision at every stack, here on the built-in synthetic people:

  python -m hpe_jax.main --config=configs/hourglass.py --workdir=/tmp/hg

Arguments (comma-separated):

* ``smoke``: 2 stacks of 32 features, depth 2, 64x64 crops of 128x128
  synthetic scenes, batch 32, 600 Adam steps. On 2 CPU cores: 2 minutes
  (130 s, 5.6 steps/s); validation PCK@0.2 (torso) 0.007 untrained ->
  0.292, PCKh@0.5 0.004 -> 0.215.
* ``mpii``: MPII in mmpose's list format under ``--config.dataset.root``
  (``annotations/mpii_{train,val}.json``, ``images/``), PCKh@0.5 with flip
  test. Published: 0.881 (paper, 8 stacks), 0.902 (PyTorch
  re-implementation). Meant for one or more GPUs; its time per step is not
  measured yet (no GPU so far) and the result not yet reproduced here.
* ``coco``: COCO-2017 person keypoints under ``--config.dataset.root``,
  OKS AP with ground-truth boxes and flip test (mmpose's 1-stack
  Hourglass-52 gets 0.726 with detected boxes). Not yet reproduced here.
* ``lsp``: LSP + LSPET training, LSP test PCK@0.2 (torso) with flip test
  (``--config.dataset.root`` holds ``lsp/`` and ``lspet/``, like
  ``../shared/data``), at the paper's size. Not yet reproduced here
  (published: CPM 84.3 on this protocol).
* ``lsp_cpu``: the same data and protocol sized for 2 CPU cores: 2 stacks of
  64 features, depth 3, 128x128 crops, batch 16, 13,000 Adam steps (cosine
  from 1e-3), about 19 epochs of the 11,000 training images:

    python -m hpe_jax.main --config=configs/hourglass.py:lsp_cpu \
        --config.dataset.root=../shared/data --workdir=/tmp/hg_lsp_cpu

  On 2 CPU cores (float32, jax 0.10.2): 1 h 50 min wall time, of which
  about 15 min were lost to other work on the machine in the first 2,000
  steps (undisturbed: 2.2 steps/s, about 1 h 45 min with the evaluations).
  LSP test PCK@0.2 (torso, flip test): 0.752 (0.739 without flip); 0.476
  after 1,000 steps, 0.671 after 6,000. Per joint and the whole curve:
  docs/models.md.

Any field can be overridden: ``--config.model.num_stacks=2``,
``--config.total_steps=1000``, ``--config.model.dtype=bfloat16``, ...

Sweep (`get_hyper`): 1, 2, 4 and 8 stacks, the paper's ablation; smoke-sized
on 2 CPU cores:

  python -m launch.sweep --config=configs/hourglass.py:smoke \
      --workdir_root=/tmp/hg_stacks
"""

from hpe_jax.training import base_config


def get_config(arg=None):
  args = base_config.parse_args(arg,
                                ('smoke', 'lsp_cpu') + base_config.DATASETS)
  config = base_config.get_base_config('hourglass')
  config.model.update(num_stacks=8, features=256, depth=4, num_blocks=1)
  config.input.image_size = (256, 256)
  config.input.output_stride = 4
  config.codec.sigma = 2.0
  config.optimizer.name = 'rmsprop'
  config.optimizer.learning_rate = 2.5e-4
  config.optimizer.schedule.name = 'step'
  config.optimizer.schedule.boundaries = (100_000, 130_000)
  config.optimizer.schedule.decay_factor = 0.1
  config.input.batch_size = 16
  config.total_steps = 150_000
  config.eval_every = 5000
  config.checkpoint_every = 5000

  if 'lsp_cpu' in args:
    args.add('lsp')
  for name in args & set(base_config.DATASETS):
    base_config.use_dataset(config, name)
  if 'smoke' in args:
    config.model.update(num_stacks=2, features=32, depth=2)
    config.input.image_size = (64, 64)
    config.codec.sigma = 1.0
    base_config.use_smoke_schedule(config, total_steps=600, batch_size=32)
  if 'lsp_cpu' in args:
    use_lsp_cpu_schedule(config)
  config.lock()
  return config


def use_lsp_cpu_schedule(config):
  """LSP + LSPET on 2 CPU cores in under 2 hours.

  On XLA:CPU this network's step is bound by its elementwise ops (batch
  norm, ReLU, adds), not by its convs: 32, 48 and 64 features cost the same
  per image at 128x128 and separable residuals were slower, so the recipe
  keeps 64 features and buys speed with resolution. A batch of 16 ran at
  36 images/s, 8 at 30 and 32 at 28 (cache effects).
  """
  config.model.update(num_stacks=2, features=64, depth=3)
  config.input.image_size = (128, 128)
  config.codec.sigma = 1.0
  config.optimizer.update(name='adam', learning_rate=1e-3)
  config.optimizer.schedule.update(name='cosine', warmup_steps=500)
  config.input.batch_size = 16
  config.input.eval_batch_size = 32
  config.total_steps = 13_000
  config.log_every = 100
  config.eval_every = 1000
  config.checkpoint_every = 1000


def get_hyper(h):
  return h.sweep('model.num_stacks', [1, 2, 4, 8])
