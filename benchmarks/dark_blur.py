"""DARK's blur, matched to the codec's sigma vs the former fixed 11 taps.

Evaluates one checkpoint of a keypoint run twice, decoding with the codec's
sigma-matched blur and with the fixed 11-tap kernel (made for sigma 2) the
decoder used before, and prints both metric sets:

  python benchmarks/dark_blur.py --workdir=/tmp/hg_smoke [--checkpoint=latest]
"""

import dataclasses

from absl import app
from absl import flags

from hpe_jax import tasks
from hpe_jax.codecs import heatmap
from hpe_jax.data import datasets
from hpe_jax.runtime import run_config
from hpe_jax.runtime import trained_run

_WORKDIR = flags.DEFINE_string('workdir', None, 'A keypoint run.')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'latest',
                                  "'latest', 'best' or a step number.")


class FixedKernelCodec(heatmap.HeatmapCodec):
  """The codec, decoding DARK with the old fixed 11-tap blur."""

  def decode(self, heatmaps):
    return heatmap.decode_heatmaps(heatmaps, self.decode_method, 11)


def main(argv):
  del argv
  config = run_config.load_config(_WORKDIR.value)
  model, variables, step, mesh = trained_run.load_trained(
      config, _WORKDIR.value, _CHECKPOINT.value)
  dataset = datasets.build(config.dataset, 'eval')
  task = tasks.make(config)
  fixed = FixedKernelCodec(task.codec.sigma, 'dark', task.codec.stride)
  for name, codec in ((f'blur sigma {task.codec.sigma:g}, '
                       f'{task.codec.blur_kernel} taps', task.codec),
                      ('fixed 11 taps', fixed)):
    evaluator = dataclasses.replace(task, codec=codec).make_evaluator(
        config, dataset, model, mesh)
    metrics, _ = evaluator.evaluate(variables)
    print(f'step {step}, DARK {name}: ' +
          ', '.join(f'{k}={v:.4f}' for k, v in metrics.items()))


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main)
