"""Measures the input pipeline alone: training examples per second.

  python -m hpe_jax.data.throughput --config=hpe_jax/data/config.py \
      [--batches=20] [--config.input.num_workers=2]

Builds the training pipeline of the config, skips a few warm-up batches
(worker start-up, first reads), then times `--batches` batches. Compare with
a training step's examples per second to see whether training is input-bound.
"""

import time

from absl import flags
from ml_collections import config_flags

from hpe_jax import cli
from hpe_jax.data import datasets
from hpe_jax.data import pipeline

def measure(dataset, input_cfg, *, seed: int, batch_size: int,
            batches: int, warmup: int) -> dict[str, float]:
  """Examples per second of the training pipeline after `warmup` batches."""
  it = iter(pipeline.train_dataset(dataset, input_cfg, seed=seed,
                                   batch_size=batch_size))
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - start
  return dict(examples_per_s=batches * batch_size / seconds,
              ms_per_batch=1000 * seconds / batches)


def main(argv):
  del argv
  config = flags.FLAGS.config
  dataset = datasets.build(config.dataset, 'train')
  result = measure(dataset, config.input, seed=config.seed,
                   batch_size=config.input.batch_size,
                   batches=flags.FLAGS.batches, warmup=flags.FLAGS.warmup)
  print(f'{dataset.name} {config.input.mode} {tuple(config.input.image_size)} '
        f'batch {config.input.batch_size}, {config.input.num_workers} '
        f'workers, {config.input.num_threads} threads: '
        f'{result["examples_per_s"]:.1f} examples/s '
        f'({result["ms_per_batch"]:.1f} ms/batch)')


if __name__ == '__main__':
  # Defined here, not at import: the benchmark imports `measure`.
  config_flags.DEFINE_config_file(
      'config', None, 'Config file with dataset and input sections.',
      lock_config=True)
  flags.DEFINE_integer('batches', 20, 'Batches to time.')
  flags.DEFINE_integer('warmup', 3, 'Batches before timing.')
  flags.mark_flags_as_required(['config'])
  cli.run(main)
