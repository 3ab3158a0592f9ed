"""Evaluates a trained run's checkpoint on its evaluation split.

  python -m hpe_jax.evaluate --workdir=DIR [--checkpoint=latest|best|STEP] \
      [--config.eval.flip=true] [--config.eval.boxes=DETECTIONS.json] \
      [--config.dataset.root=PATH ...]

The run's own config (``DIR/config.json``) is the starting point; any
``--config.key=value`` overrides it, e.g. the flip test, detected boxes
(a COCO detection results file, for top-down evaluation as in COCO's
protocol) or another dataset root. The metrics are printed and written to
``DIR/eval/step<N><protocol>.json``; tasks whose evaluator makes COCO
results (keypoints; part_rcnn with boxes, keypoints and masks) also write
them to ``...results.json``. Works for every task, with the metrics of its
evaluator.

The mask tasks (pose_mask, segmentation) take ``--config.eval.refine=crf``
or ``superpixel_graphcut`` (`hpe_jax.refinement.refine_option`): the
metrics are then those of the refined masks, the network's own prefixed
``unrefined/``, plus ``refine_seconds_per_image``; the CRF uses the run's
searched params (``DIR/refine_search.json``) if there are any, and the
summary JSON names the refinement (``refine``).
"""

import json
import sys

from absl import flags

from hpe_jax import cli
from hpe_jax import tasks
from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.refinement import refine_option
from hpe_jax.runtime import storage


def main(argv):
  del argv
  out_dir = cli.output_folder(flags.FLAGS.workdir, 'eval')
  config, model, variables, step, mesh = cli.load_run()
  task = tasks.make(config)
  dataset = datasets.build(config.dataset, 'eval')
  refine = config.eval.get('refine')
  evaluator = task.make_evaluator(
      config, dataset, model, mesh,
      **refine_option.workdir_args(config, flags.FLAGS.workdir))
  stem = f'{out_dir}/step{step}{task.protocol_suffix(config)}'
  written = [f'{stem}.json']
  metrics, _ = evaluator.evaluate(variables)
  if evaluator.results is not None:
    coco.write_results(stem + '_results.json', evaluator.results)
    written.append(f'{stem}_results.json')
  summary = dict(step=step, checkpoint=flags.FLAGS.checkpoint,
                 dataset=config.dataset.name, examples=evaluator.count,
                 flip=config.eval.flip, boxes=config.eval.boxes,
                 metrics=metrics)
  if refine:
    summary['refine'] = evaluator.refiner.describe()
  storage.join(stem + '.json').write_text(json.dumps(summary, indent=2))
  print(f'{dataset.name} eval split, checkpoint step {step}, '
        f'{evaluator.count} examples, flip test '
        f'{"on" if config.eval.flip else "off"}, boxes {config.eval.boxes}'
        f'{_refine_text(summary.get("refine"))}:')
  for name, value in metrics.items():
    print(f'  {name:28s} {value:.4f}')
  print(f'written: {", ".join(written)}')


def _refine_text(refine) -> str:
  if not refine:
    return ''
  if 'crf_params' not in refine:
    return f', refined by {refine["method"]}'
  params = ', '.join(f'{k}={v:g}' for k, v in refine['crf_params'].items())
  return (f', refined by crf ({params}; window {refine["crf_window"]}, '
          f'{refine["crf_iterations"]} iterations)')


if __name__ == '__main__':
  cli.define_run_flags(sys.argv)
  cli.run(main)
