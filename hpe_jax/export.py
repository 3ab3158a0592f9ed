"""Exports a trained run's predictor for use outside this codebase.

  python -m hpe_jax.export --workdir=RUN --output=PATH \
      [--checkpoint=best|latest|STEP] [--platforms=cpu,cuda] [--min_score=0.3]

The task's predict step (`hpe_jax.tasks.base.Task.serving_function`: uint8
model inputs in; normalisation, the model in evaluation mode, decoding and
the mapping back to image pixels; arrays out) is serialised with
`jax.export` for the given platforms, with a symbolic batch dimension. The
folder PATH gets:

* ``predictor.jaxexport``: the serialised function; its arguments are the
  variables (evaluation BatchNorm statistics included) and the batch, so
  the weights are not baked in as constants;
* ``variables.npz``: the variables' leaves in the function's argument
  order;
* ``metadata.json``: task, model, checkpoint step, input geometry (mode,
  input size, output stride, box padding), skeleton and part schema,
  the inputs' and outputs' shapes, platforms and the jax version.

`hpe_jax.serving.load(PATH)` loads it with jax and numpy only;
``docs/deployment.md`` has a standalone example. The writing is
`hpe_jax.serving.exporter`.
"""

from __future__ import annotations

import sys

from absl import flags

from hpe_jax import cli
from hpe_jax import errors
from hpe_jax.serving import exporter

_OUTPUT = flags.DEFINE_string('output', None, 'Folder of the export.')
_PLATFORMS = flags.DEFINE_list(
    'platforms', ['cpu', 'cuda'], 'Platforms to lower for (cpu, cuda, tpu).')
_MIN_SCORE = flags.DEFINE_float(
    'min_score', 0.3, 'Detection threshold of tasks that detect (part_rcnn).')


def main(argv):
  del argv
  cli.output_folder(_OUTPUT.value)
  config, model, variables, step, _ = cli.load_run()
  try:
    meta = exporter.export_predictor(
        config, model, variables, step, _OUTPUT.value,
        platforms=_PLATFORMS.value, min_score=_MIN_SCORE.value)
  except NotImplementedError as e:
    raise errors.ConfigError(str(e)) from e
  print(f'{meta["task"]} predictor ({meta["model"]}, checkpoint step '
        f'{step}, input {meta["input_size"]}) for '
        f'{",".join(meta["platforms"])} -> {_OUTPUT.value}')


if __name__ == '__main__':
  cli.define_run_flags(sys.argv)
  flags.mark_flags_as_required(['output'])
  cli.run(main)
