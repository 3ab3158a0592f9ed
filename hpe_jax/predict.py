"""Runs a trained run's model on images and draws what it predicts.

  python -m hpe_jax.predict --workdir=DIR --input=IMAGE_OR_FOLDER \
      --output=OUT [--checkpoint=latest] [--config.eval.flip=true] \
      [--boxes=COCO_DETECTIONS.json] [--poses=COCO_KEYPOINT_RESULTS.json]

What it does depends on the run's task (image ids are numeric file stems,
as in COCO, else positions in sorted order):

* keypoints: each person box (from ``--boxes``; without it the whole image
  is one person) is cropped, run and decoded as in evaluation. Writes
  ``OUT/<stem>.png`` (skeletons, one colour per person), ``OUT/<stem>.json``
  and ``OUT/results.json`` (COCO keypoint results).
* segmentation (U-Net family): the whole image, letterboxed. Writes
  ``OUT/<stem>.png`` (mask or parts as a coloured overlay, plus the
  skeleton of the joint heads), ``OUT/<stem>_labels.png`` (per-pixel labels
  at the image's size: 0 background, 1 person or the part label) and, with
  joint heads, ``OUT/<stem>.json`` (joints per head, image pixels).
* pose_mask: needs ``--poses``, a COCO keypoint results file (e.g. the
  ``results.json`` of this command run with a keypoint model) in the
  dataset's own skeleton or the model's; each person is cropped around its
  joints and its mask predicted. Writes ``OUT/<stem>.png`` (every person's
  mask in its own colour, and its skeleton) and ``OUT/<stem>_labels.png``
  (0 background, n for the n-th person by score).
"""

import collections
import json
import os
import sys

from absl import app
from absl import flags
import cv2
import numpy as np

from hpe_jax import cli
from hpe_jax import visualization
from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import image_folder
from hpe_jax.data import skeleton_conversion
from hpe_jax.data import warp
from hpe_jax.evaluation import batched_prediction
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.evaluation import instance_metrics
from hpe_jax.evaluation import keypoint_evaluator
from hpe_jax.evaluation import part_rcnn_evaluator
from hpe_jax.evaluation import pose_mask_evaluator
from hpe_jax.evaluation import segmentation_evaluator

_INPUT = flags.DEFINE_string('input', None, 'An image or a folder of them.')
_OUTPUT = flags.DEFINE_string('output', None, 'Folder for the outputs.')
_BOXES = flags.DEFINE_string(
    'boxes', None, 'keypoints: COCO detection results file with person '
    'boxes.')
_POSES = flags.DEFINE_string(
    'poses', None, 'pose_mask: COCO keypoint results file with the people.')
_MIN_BOX_SCORE = flags.DEFINE_float(
    'min_box_score', 0.3, 'Detections (or poses) below this are ignored.')
_THRESHOLD = flags.DEFINE_float(
    'keypoint_threshold', 0.2, 'Joints scoring below this are not drawn '
    '(nor, for pose_mask, given to the model).')

# A box around a person's joints misses the head top, hands and feet edges;
# pose_mask crops use it enlarged by this factor (before input.box_padding).
POSE_BOX_SCALE = 1.15


def whole_image_boxes(folder: image_folder.ImageFolder):
  """One box covering each whole image (pixel edges), score 1."""
  boxes = {}
  for i in range(len(folder)):
    ann = folder.annotation(i)
    box = example.image_box(ann['height'], ann['width'])
    boxes[ann['image_id']] = (box[None], np.ones(1, np.float32))
  return boxes


def _stem(path: str) -> str:
  return os.path.splitext(os.path.basename(path))[0]


def _output(name: str) -> str:
  return os.path.join(_OUTPUT.value, name)


def predict_keypoints(config, model, variables, mesh, skeleton):
  folder = image_folder.ImageFolder(_INPUT.value, skeleton)
  detections = (coco.load_detections(_BOXES.value, folder.image_ids,
                                     _MIN_BOX_SCORE.value)
                if _BOXES.value else whole_image_boxes(folder))
  predictor = keypoint_evaluator.KeypointEvaluator(
      folder, config.input, config.eval, model=model, mesh=mesh,
      batch_size=config.input.eval_batch_size, detections=detections)
  results = predictor.results(predictor.predict(variables)[0])
  coco_keypoints.write_results(_output('results.json'), results)
  by_image = collections.defaultdict(list)
  for r in results:
    by_image[r['image_id']].append(r)
  for path, image_id in zip(folder.paths, folder.image_ids):
    people = by_image[image_id]
    image = files.read_image(path)
    if people:
      kp = np.array([p['keypoints'] for p in people]).reshape(
          len(people), skeleton.num_joints, 3)
      image = visualization.draw_skeleton(
          image, kp, skeleton, threshold=_THRESHOLD.value,
          person_colors=visualization.person_colors(len(people)))
    visualization.save_png(_output(f'{_stem(path)}.png'), image)
    coco_keypoints.write_results(_output(f'{_stem(path)}.json'), people)
  return len(folder), f'{len(results)} people'


def predict_segmentation(config, model, variables, mesh, skeleton):
  folder = image_folder.ImageFolder(_INPUT.value, skeleton)
  parts = (datasets.part_schema(config.dataset)
           if config.loss.mask_target == 'part_map' else None)
  predict = segmentation_evaluator.make_predict_fn(
      model, skeleton, parts, config.eval.flip, mesh)
  paths = dict(zip(folder.image_ids, folder.paths))
  heads = [h for h in segmentation_evaluator.JOINT_OUTPUTS
           if model.joint_head in (h, 'both')]
  batches, _ = batched_prediction.eval_batches(
      folder, config.input, config.input.eval_batch_size, mesh)
  for host, _ in batched_prediction.host_predictions(
      batches, predict, variables, mesh,
      ('image_id', 'affine', 'valid')):
    for i in np.flatnonzero(host['valid']):
      path = paths[int(host['image_id'][i])]
      image = files.read_image(path)
      labels = warp.labels_to_image(host['labels'][i], host['affine'][i],
                               image.shape)
      drawn = visualization.overlay_labels(image, labels)
      joints = {}
      for h in heads:
        xy = host[f'{h}_keypoints'][i]
        joints[h] = xy.tolist()
        if h == heads[0]:
          kp = np.concatenate([xy, np.full((len(xy), 1), 2.0)], -1)
          drawn = visualization.draw_skeleton(drawn, kp, skeleton)
      visualization.save_png(_output(f'{_stem(path)}.png'), drawn)
      cv2.imwrite(_output(f'{_stem(path)}_labels.png'), labels)
      if heads:
        with open(_output(f'{_stem(path)}.json'), 'w') as f:
          json.dump({'image_id': int(host['image_id'][i]), 'joints': joints},
                    f)
  return len(folder), 'masks' if parts is None else 'part maps'


def _load_poses(config, folder, skeleton):
  """{image_id: keypoints [N, K, 3]} of --poses in the model's skeleton.

  The file may hold the model's skeleton or the training dataset's own
  (e.g. COCO-17 for an LSP-14 model), which is converted.
  """
  poses = coco.load_keypoint_results(_POSES.value, folder.image_ids,
                                     min_score=_MIN_BOX_SCORE.value)
  num = max((kp.shape[1] for kp, _ in poses.values()), default=0)
  source = datasets.SKELETONS[config.dataset.name]
  for candidate in (skeleton, source):
    if candidate is not None and candidate.num_joints == num:
      return {image_id: skeleton_conversion.convert_keypoints(
          kp, candidate, skeleton) for image_id, (kp, _) in poses.items()}
  raise example.DatasetError(
      f'{_POSES.value}: expected people with {skeleton.num_joints} joints '
      f'({skeleton.name}) or {source.num_joints} ({source.name}) scoring >= '
      f'{_MIN_BOX_SCORE.value}, found {num} joints')


def _people_from_poses(config, folder, skeleton):
  """{image_id: (keypoints, boxes)} of the people in --poses."""
  people = {}
  for image_id, kp in _load_poses(config, folder, skeleton).items():
    kp = kp.copy()
    kp[..., 2] = np.where(kp[..., 2] > _THRESHOLD.value, 2, 0)
    boxes = example.boxes_from_keypoints(kp)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * POSE_BOX_SCALE
    people[image_id] = (kp, np.concatenate([centre - half, centre + half],
                                           -1))
  return people


def predict_pose_masks(config, model, variables, mesh, skeleton):
  if not _POSES.value:
    raise app.UsageError('a pose_mask run needs --poses (COCO keypoint '
                         'results, e.g. from predicting with a keypoint '
                         'model)')
  folder = image_folder.ImageFolder(_INPUT.value, skeleton)
  folder.set_people(_people_from_poses(config, folder, skeleton))
  predict = pose_mask_evaluator.make_predict_fn(model, mesh)
  people = collections.defaultdict(list)
  batches, _ = batched_prediction.eval_batches(
      folder, config.input, config.input.eval_batch_size, mesh)
  for host, _ in batched_prediction.host_predictions(
      batches, predict, variables, mesh,
      ('image_id', 'person_index', 'affine', 'valid', 'gt_keypoints')):
    for i in np.flatnonzero(host['valid']):
      people[int(host['image_id'][i])].append(
          (int(host['person_index'][i]), host['labels'][i],
           host['affine'][i], host['gt_keypoints'][i]))
  count = 0
  for path, image_id in zip(folder.paths, folder.image_ids):
    image = files.read_image(path)
    instances = np.zeros(image.shape[:2], np.uint8)
    found = sorted(people[image_id], key=lambda p: p[0])
    # People are ordered by score; the best one is painted last, on top.
    for rank, (_, labels, affine, _) in reversed(list(enumerate(found))):
      mask = warp.labels_to_image(labels, affine, image.shape) > 0
      instances[mask] = rank + 1
    drawn = visualization.overlay_labels(image, instances)
    if found:
      kp = np.stack([p[3] for p in found])
      drawn = visualization.draw_skeleton(
          drawn, kp, skeleton,
          person_colors=visualization.person_colors(len(found)))
    visualization.save_png(_output(f'{_stem(path)}.png'), drawn)
    cv2.imwrite(_output(f'{_stem(path)}_labels.png'), instances)
    count += len(found)
  return len(folder), f'{count} people'


def predict_people(config, model, variables, mesh, skeleton):
  folder = image_folder.ImageFolder(_INPUT.value, skeleton)
  min_score = _MIN_BOX_SCORE.value
  predict = part_rcnn_evaluator.make_predict_fn(model, min_score, mesh)
  paths = dict(zip(folder.image_ids, folder.paths))
  results = []
  batches, _ = batched_prediction.eval_batches(
      folder, config.input, config.input.eval_batch_size, mesh)
  for host, _ in batched_prediction.host_predictions(
      batches, predict, variables, mesh, ('image_id', 'affine', 'valid')):
    for i in np.flatnonzero(host['valid']):
      image_id = int(host['image_id'][i])
      path = paths[image_id]
      image = files.read_image(path)
      people = part_rcnn_evaluator.image_people(host, i, min_score)
      instances, masks = part_rcnn_evaluator.image_instances(
          people, host['affine'][i], image.shape)
      parts = warp.labels_to_image(people['parts'], host['affine'][i],
                                   image.shape)
      found = instance_metrics.instance_results(
          [image_id] * len(masks), people['image_boxes'], people['scores'],
          keypoints=people['keypoints'], masks=masks)
      drawn = visualization.draw_people(
          image, instances, parts, people['kept'], people['keypoints'],
          skeleton, threshold=_THRESHOLD.value)
      visualization.save_png(_output(f'{_stem(path)}.png'), drawn)
      cv2.imwrite(_output(f'{_stem(path)}_instances.png'), instances)
      cv2.imwrite(_output(f'{_stem(path)}_parts.png'), parts)
      coco_keypoints.write_results(_output(f'{_stem(path)}.json'), found)
      results += found
  coco_keypoints.write_results(_output('results.json'), results)
  return len(folder), f'{len(results)} people'


PREDICTORS = {'keypoints': predict_keypoints,
              'segmentation': predict_segmentation,
              'pose_mask': predict_pose_masks,
              'part_rcnn': predict_people}


def main(argv):
  del argv
  config, model, variables, step, mesh = cli.load_run()
  skeleton = datasets.skeleton(config.dataset)
  os.makedirs(_OUTPUT.value, exist_ok=True)
  images, what = PREDICTORS[config.task](config, model, variables, mesh,
                                         skeleton)
  print(f'{images} images, {what} (checkpoint step {step}) -> '
        f'{_OUTPUT.value}')


if __name__ == '__main__':
  cli.define_run_flags(sys.argv)
  flags.mark_flags_as_required(['input', 'output'])
  app.run(main)
