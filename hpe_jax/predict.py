"""Predicts keypoints on images with a trained run and draws them.

  python -m hpe_jax.predict --workdir=DIR --input=IMAGE_OR_FOLDER \
      --output=OUT [--boxes=COCO_DETECTIONS.json] [--checkpoint=latest] \
      [--config.eval.flip=true]

Each person box (from the detection file, matched by image id = numeric
file stem as in COCO; without boxes the whole image is one person) is
cropped, run through the model and decoded like in evaluation. For every
image it writes ``OUT/<stem>.png`` (skeletons drawn over the image, one
colour per person) and ``OUT/<stem>.json`` (COCO keypoint results: keypoints
with scores per person); ``OUT/results.json`` holds all of them.
"""

import collections
import os
import sys

from absl import app
from absl import flags
import numpy as np

from hpe_jax import cli
from hpe_jax import visualization
from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import image_folder
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.evaluation import keypoint_evaluator

_INPUT = flags.DEFINE_string('input', None, 'An image or a folder of them.')
_OUTPUT = flags.DEFINE_string('output', None, 'Folder for the outputs.')
_BOXES = flags.DEFINE_string(
    'boxes', None, 'COCO detection results file with person boxes.')
_MIN_BOX_SCORE = flags.DEFINE_float('min_box_score', 0.3,
                                    'Detections below this are ignored.')
_THRESHOLD = flags.DEFINE_float('keypoint_threshold', 0.2,
                                'Joints scoring below this are not drawn.')


def whole_image_boxes(folder: image_folder.ImageFolder):
  """One box covering each whole image (pixel edges), score 1."""
  boxes = {}
  for i in range(len(folder)):
    ann = folder.annotation(i)
    box = example.image_box(ann['height'], ann['width'])
    boxes[ann['image_id']] = (box[None], np.ones(1, np.float32))
  return boxes


def main(argv):
  del argv
  config, model, variables, step, mesh = cli.load_run()
  skeleton = datasets.skeleton(config.dataset)
  folder = image_folder.ImageFolder(_INPUT.value, skeleton)
  detections = (coco.load_detections(_BOXES.value, folder.image_ids,
                                     _MIN_BOX_SCORE.value)
                if _BOXES.value else whole_image_boxes(folder))
  predictor = keypoint_evaluator.KeypointEvaluator(
      folder, config.input, config.eval, model=model, mesh=mesh,
      batch_size=config.input.eval_batch_size, detections=detections)
  results = predictor.results(predictor.predict(variables)[0])

  os.makedirs(_OUTPUT.value, exist_ok=True)
  coco_keypoints.write_results(os.path.join(_OUTPUT.value, 'results.json'),
                               results)
  by_image = collections.defaultdict(list)
  for r in results:
    by_image[r['image_id']].append(r)
  colors = visualization.label_palette()[1:]
  for path, image_id in zip(folder.paths, folder.image_ids):
    people = by_image[image_id]
    stem = os.path.splitext(os.path.basename(path))[0]
    image = files.read_image(path)
    if people:
      kp = np.array([p['keypoints'] for p in people]).reshape(
          len(people), skeleton.num_joints, 3)
      image = visualization.draw_skeleton(
          image, kp, skeleton, threshold=_THRESHOLD.value,
          person_colors=colors[np.arange(len(people)) % len(colors)])
    visualization.save_png(os.path.join(_OUTPUT.value, f'{stem}.png'), image)
    coco_keypoints.write_results(os.path.join(_OUTPUT.value, f'{stem}.json'),
                                 people)
  print(f'{len(folder)} images, {len(results)} people (checkpoint step '
        f'{step}) -> {_OUTPUT.value}')


if __name__ == '__main__':
  cli.define_run_flags(sys.argv)
  flags.mark_flags_as_required(['input', 'output'])
  app.run(main)
