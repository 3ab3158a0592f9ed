"""Evaluates a trained run's checkpoint on its evaluation split.

  python -m hpe_jax.evaluate --workdir=DIR [--checkpoint=latest|best|STEP] \
      [--config.eval.flip=true] [--config.eval.boxes=DETECTIONS.json] \
      [--config.dataset.root=PATH ...]

The run's own config (``DIR/config.json``) is the starting point; any
``--config.key=value`` overrides it, e.g. the flip test, detected boxes
(a COCO detection results file, for top-down evaluation as in COCO's
protocol) or another dataset root. The metrics are printed and written to
``DIR/eval/step<N><protocol>.json``; for keypoint models the predictions
also go to a COCO keypoint results file (``...results.json``), for part_rcnn
to COCO results with boxes, keypoints and masks. Works for every task
(keypoints, segmentation, pose_mask, part_rcnn), with the metrics of its
evaluator.
"""

import json
import sys

from absl import app
from absl import flags

from hpe_jax import cli
from hpe_jax.data import datasets
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.training import storage
from hpe_jax.training import trainer


def protocol_suffix(config) -> str:
  if config.task != 'keypoints':
    return '_flip' if config.eval.flip else ''
  boxes = 'gt' if config.eval.boxes == 'gt' else 'detected'
  return coco_keypoints.protocol_suffix_for(boxes, config.eval.flip)


def main(argv):
  del argv
  config, model, variables, step, mesh = cli.load_run()
  workdir = flags.FLAGS.workdir
  dataset = datasets.build(config.dataset, 'eval')
  evaluator = trainer.make_evaluator(config, dataset, model, mesh)
  out_dir = storage.join(workdir, 'eval')
  out_dir.mkdir(parents=True, exist_ok=True)
  stem = f'{out_dir}/step{step}{protocol_suffix(config)}'
  written = [f'{stem}.json']
  results = None
  if config.task == 'keypoints':
    pred, _ = evaluator.predict(variables)
    metrics = evaluator.metrics(pred)
    results = evaluator.results(pred)
  elif config.task == 'part_rcnn':
    results, part_metrics, _ = evaluator.predict(variables)
    metrics = evaluator.metrics(results, part_metrics)
  else:
    metrics, _ = evaluator.evaluate(variables)
  if results is not None:
    coco_keypoints.write_results(stem + '_results.json', results)
    written.append(f'{stem}_results.json')
  summary = dict(step=step, checkpoint=flags.FLAGS.checkpoint,
                 dataset=config.dataset.name, examples=evaluator.count,
                 flip=config.eval.flip, boxes=config.eval.boxes,
                 metrics=metrics)
  storage.join(stem + '.json').write_text(json.dumps(summary, indent=2))
  print(f'{dataset.name} eval split, checkpoint step {step}, '
        f'{evaluator.count} examples, flip test '
        f'{"on" if config.eval.flip else "off"}, boxes {config.eval.boxes}:')
  for name, value in metrics.items():
    print(f'  {name:28s} {value:.4f}')
  print(f'written: {", ".join(written)}')


if __name__ == '__main__':
  cli.define_run_flags(sys.argv)
  app.run(main)
