"""Runs a trained run's model on images or a video and draws what it
predicts.

  python -m hpe_jax.predict --workdir=DIR --input=IMAGE_OR_FOLDER_OR_VIDEO \
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

Video: an input ending in one of `video.VIDEO_EXTENSIONS` (.mp4 .avi .mov
.mkv .webm) is read with OpenCV in chunks of about 64 frames (whole batches of
``input.eval_batch_size``, so memory stays bounded and nothing
recompiles), each frame predicted as an image without ``--boxes`` (the
whole frame is one person for keypoint models). It writes
``OUT/<stem>.mp4`` (every frame drawn, at the video's frame rate and size;
a part legend is left out, as it would change the size) and
``OUT/<stem>.json``, one record per frame: ``{"frame": i, "time_s": t}``
plus ``people`` (COCO results, ``image_id`` the frame number) for tasks
with people and ``joints`` for joint heads. ``--boxes`` and ``--poses`` are
for image folders, so pose_mask runs cannot take a video. A video that
cannot be opened or has no frame stops with one line; a frame that cannot
be decoded ends the video there: what came before is written, the frame is
named and the exit status is 1. Frames are decoded in this process, so
``input.num_workers`` is not used.
"""

import json
import math
import os
import sys

from absl import flags
import numpy as np

from hpe_jax import cli
from hpe_jax import errors
from hpe_jax import tasks
from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import image_folder
from hpe_jax.data import video
from hpe_jax.refinement import refine_option

_INPUT = flags.DEFINE_string(
    'input', None, 'An image, a folder of them or a video file.')
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

# Frames predicted together: bounds the decoded frames held in memory.
VIDEO_CHUNK_FRAMES = 64


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


def predict_video(config, skeleton) -> int:
  """`main` for a video input (module docstring)."""
  for flag in (_BOXES, _POSES):
    if flag.value:
      raise errors.ReportableError(
          f'--{flag.name} is for image folders, not a video ({_INPUT.value})')
  # A task whose rows are crops around given poses has nothing to run on
  # without --poses.
  if tasks.get(config.task).serving_rows == 'poses':
    raise errors.ReportableError(
        f'a {config.task} run needs the people\'s poses (--poses), which '
        f'only image folders take: it cannot run on a video ({_INPUT.value})')
  reader = video.VideoReader(_INPUT.value)
  cli.output_folder(_OUTPUT.value)
  stem = os.path.splitext(os.path.basename(_INPUT.value))[0]
  config, model, variables, step, mesh = cli.load_run()
  # Worker processes would get a pickled copy of every chunk's frames.
  config.input.num_workers = 0
  task = tasks.make(config)
  predictor = task.make_predictor(
      config, model, mesh, skeleton, min_score=_MIN_BOX_SCORE.value,
      keypoint_threshold=_THRESHOLD.value, **refine_option.workdir_args(
          config, flags.FLAGS.workdir))
  # Whole batches, so only the last chunk runs padding rows.
  batch = config.input.eval_batch_size
  chunk = batch * math.ceil(VIDEO_CHUNK_FRAMES / batch)
  frames, people = [], []
  out = os.path.join(_OUTPUT.value, f'{stem}.mp4')
  with reader, video.VideoWriter(out, reader.fps) as writer:
    for images in reader.chunks(chunk):
      first = writer.frames
      results = predictor.predict(
          variables, video.FrameDataset(images, first, _INPUT.value,
                                        skeleton))
      for i, (image, result) in enumerate(zip(images, results)):
        writer.write(task.draw(image, result, skeleton, _THRESHOLD.value)[
            :reader.height, :reader.width])
        record = {'frame': first + i,
                  'time_s': round((first + i) / reader.fps, 4)}
        if 'people' in result:
          record['people'] = result['people']
          people += result['people']
        if result.get('joints'):
          record['joints'] = {k: np.asarray(xy).tolist()
                              for k, xy in result['joints'].items()}
        frames.append(record)
  with open(os.path.join(_OUTPUT.value, f'{stem}.json'), 'w') as f:
    json.dump(frames, f)
  summary = (f'{len(frames)} frames ({reader.fps:g} fps, '
             f'{reader.width}x{reader.height})')
  if 'people' in frames[0]:
    summary += ', ' + people_summary(people, _THRESHOLD.value)
  print(f'{summary} (checkpoint step {step}) -> {out}')
  return video.exit_status(reader)


def main(argv):
  del argv
  # Inputs are checked before the model loads (which takes a while).
  config = flags.FLAGS.config
  skeleton = datasets.skeleton(config.dataset)
  if video.is_video(_INPUT.value):
    return predict_video(config, skeleton)
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
        keypoint_threshold=_THRESHOLD.value, **refine_option.workdir_args(
          config, flags.FLAGS.workdir))
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
