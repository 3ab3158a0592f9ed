"""Runs a trained run's model on images and draws what it predicts.

  python -m hpe_jax.predict --workdir=DIR --input=IMAGE_OR_FOLDER \
      --output=OUT [--checkpoint=latest] [--config.eval.flip=true] \
      [--boxes=COCO_DETECTIONS.json] [--poses=COCO_KEYPOINT_RESULTS.json]

The run's task (`hpe_jax.tasks`) predicts and draws; for every image it
writes ``OUT/<stem>.png`` (the prediction drawn over the image) and, by
task (image ids are numeric file stems, as in COCO, else positions in
sorted order):

* keypoints: each person box (from ``--boxes``; without it the whole image
  is one person) is cropped, run and decoded as in evaluation;
  ``OUT/<stem>.json`` and ``OUT/results.json`` hold COCO keypoint results;
* segmentation (U-Net family): the whole image, letterboxed;
  ``OUT/<stem>_labels.png`` holds per-pixel labels at the image's size (0
  background, 1 person or the part label) and, with joint heads,
  ``OUT/<stem>.json`` the joints per head in image pixels;
* pose_mask: needs ``--poses``, a COCO keypoint results file (e.g. the
  ``results.json`` of this command run with a keypoint model) in the
  dataset's own skeleton or the model's; each person is cropped around its
  joints; ``OUT/<stem>_labels.png`` holds 0 for background and n for the
  n-th person by score;
* part_rcnn: every person found, with ``OUT/<stem>_instances.png``,
  ``OUT/<stem>_parts.png`` and COCO results with boxes, keypoints and masks
  in ``OUT/<stem>.json`` and ``OUT/results.json``.

Joints scoring at or below ``--keypoint_threshold`` (the decoded heatmap
peak; default 0.2) are drawn faintly, not left out, and the summary line
counts them: e.g. ``18 people, 3 with a joint above the keypoint threshold
0.2; 240 of 306 joints at or below it``. Skeletons are coloured by side
(left blue, right orange, centre green) and part maps get a legend.

The inputs are checked and the output folder is made before the model
loads: a missing or empty input, boxes or poses file, or an output folder
that cannot be made stops at once with one line. An image that cannot be
decoded is skipped: every other image is written, the damaged ones are
listed at the end and the exit status is 1.
"""

import os
import sys

from absl import flags
import numpy as np

from hpe_jax import cli
from hpe_jax import tasks
from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import image_folder

_INPUT = flags.DEFINE_string('input', None, 'An image or a folder of them.')
_OUTPUT = flags.DEFINE_string('output', None, 'Folder for the outputs.')
_BOXES = flags.DEFINE_string(
    'boxes', None, 'COCO detection results file with person boxes (tasks '
    'that take boxes: keypoints).')
_POSES = flags.DEFINE_string(
    'poses', None, 'COCO keypoint results file with the people (tasks that '
    'take poses: pose_mask).')
_MIN_BOX_SCORE = flags.DEFINE_float(
    'min_box_score', 0.3, 'Detections (or poses) below this are ignored.')
_THRESHOLD = flags.DEFINE_float(
    'keypoint_threshold', 0.2, 'Joints scoring at or below this (the '
    'heatmap peak) are drawn faintly (for pose_mask: not given to the model '
    'nor drawn).')


def people_summary(records: list[dict], threshold: float) -> str:
  """How many people, and joints, of COCO `records` score above `threshold`.

  A weakly trained model finds "people" whose joints all score low; saying
  so keeps the count from overstating what the pictures show.
  """
  scores = [np.asarray(r.get('keypoints', ()), np.float32)[2::3]
            for r in records]
  found = sum(bool((s > threshold).any()) for s in scores)
  below = sum(int((s <= threshold).sum()) for s in scores)
  joints = sum(s.size for s in scores)
  return (f'{len(records)} people, {found} with a joint above the keypoint '
          f'threshold {threshold:g}; {below} of {joints} joints at or below '
          'it')


def main(argv):
  del argv
  # Inputs are checked before the model loads (which takes a while).
  config = flags.FLAGS.config
  skeleton = datasets.skeleton(config.dataset)
  images = image_folder.ImageFolder(_INPUT.value, skeleton,
                                    drop_damaged=True)
  boxes = poses = None
  if _BOXES.value:
    boxes = coco.load_detections(_BOXES.value, images.image_ids,
                                 _MIN_BOX_SCORE.value)
  if _POSES.value:
    poses = coco.load_keypoint_results(_POSES.value, images.image_ids,
                                       min_score=_MIN_BOX_SCORE.value)
  cli.output_folder(_OUTPUT.value)
  damaged = list(images.damaged)
  if len(images):
    config, model, variables, step, mesh = cli.load_run()
    task = tasks.make(config)
    predictor = task.make_predictor(
        config, model, mesh, skeleton, min_score=_MIN_BOX_SCORE.value,
        keypoint_threshold=_THRESHOLD.value)
    results = predictor.predict(variables, images, boxes=boxes, poses=poses)
  else:
    results, step = [], None
  records, written = None, 0
  for path, result in zip(images.paths, results):
    try:
      if result is None:  # damaged after the check: its reason is logged
        raise example.DamagedSampleError(path, 'could not be predicted')
      image = files.read_image(path)
    except example.DamagedSampleError as e:
      damaged.append(e)
      continue
    stem = os.path.splitext(os.path.basename(path))[0]
    found = task.save_prediction(_OUTPUT.value, stem, image, result, skeleton,
                                 _THRESHOLD.value)
    written += 1
    if found is not None:
      records = (records or []) + found
  summary = f'{written} images'
  if records is not None:
    coco.write_results(os.path.join(_OUTPUT.value, 'results.json'), records)
    summary += ', ' + people_summary(records, _THRESHOLD.value)
  print(f'{summary} (checkpoint step {step}) -> {_OUTPUT.value}')
  if damaged:
    print(f'{len(damaged)} damaged images skipped:')
    for e in damaged:
      print(f'  {e}')
  return 1 if damaged else 0


if __name__ == '__main__':
  cli.define_run_flags(sys.argv)
  flags.mark_flags_as_required(['input', 'output'])
  cli.run(main)
