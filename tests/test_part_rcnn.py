"""The multi-person part model: centre detection, the model and its loss,
composing people into instance and part maps, training, evaluation and
prediction."""

import json
import os
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import tasks
from hpe_jax.codecs import centers as center_detection
from hpe_jax.data import synthetic
from hpe_jax.models import part_rcnn
from hpe_jax.ops import roi_align
from hpe_jax.runtime import metric_writer
from hpe_jax.tasks import part_rcnn as part_rcnn_evaluator
from hpe_jax.training import losses
from hpe_jax.training import trainer
from conftest import ROOT
from test_commands import run
from test_segmentation_training import recipe


def _logit(p):
  p = np.clip(p, 1e-6, 1 - 1e-6)
  return np.log(p / (1 - p))


def test_detections_decode_from_their_own_targets():
  boxes = np.array([[[8.0, 12.0, 40.0, 60.0], [50.0, 6.0, 62.0, 30.0],
                     [0.0, 0.0, 0.0, 0.0]]], np.float32)
  valid = np.array([[True, True, False]])
  stride, size = 4, (16, 16)
  t = center_detection.center_targets(boxes, valid, size, stride)
  np.testing.assert_array_equal(t['weight'], [[1, 1, 0]])
  heat = np.asarray(t['heatmap'])
  assert heat.max() == 1 and heat.shape == (1, 16, 16)
  # Dense maps holding each person's targets at its centre cell.
  log_sizes = np.zeros((1, 16 * 16, 2), np.float32)
  offsets = np.zeros((1, 16 * 16, 2), np.float32)
  for n in range(2):
    log_sizes[0, t['index'][0, n]] = t['log_size'][0, n]
    offsets[0, t['index'][0, n]] = t['offset'][0, n]
  found, scores = center_detection.decode_detections(
      jnp.asarray(_logit(heat)), log_sizes.reshape(1, 16, 16, 2),
      offsets.reshape(1, 16, 16, 2), stride, 5, (64, 64))
  assert found.shape == (1, 5, 4) and scores.shape == (1, 5)
  np.testing.assert_allclose(scores[0, :2], 1, atol=1e-5)
  # Local maxima only: the Gaussians' shoulders are suppressed.
  assert float(scores[0, 2]) < 0.5
  order = np.argsort(-np.asarray(boxes[0, :2, 2] - boxes[0, :2, 0]))
  np.testing.assert_allclose(np.sort(found[0, :2], 0),
                             np.sort(boxes[0, :2][order], 0), atol=1e-3)


def test_decoding_keeps_a_fixed_count_on_small_maps():
  found, scores = center_detection.decode_detections(
      jnp.zeros((2, 2, 2)), jnp.zeros((2, 2, 2, 2)), jnp.zeros((2, 2, 2, 2)),
      4, 6, (8, 8))
  assert found.shape == (2, 6, 4) and scores.shape == (2, 6)
  np.testing.assert_array_equal(scores[:, 4:], 0)


def test_focal_loss_matches_its_formula():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 6)).astype(np.float32)
  target = rng.uniform(0, 0.9, size=(2, 5, 6)).astype(np.float32)
  target[0, 1, 2] = target[1, 3, 3] = 1.0
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  pos = target == 1
  expected = (-(np.log(p) * (1 - p) ** 2)[pos].sum() -
              (np.log(1 - p) * p ** 2 * (1 - target) ** 4)[~pos].sum()) / 2
  got = losses.center_focal_loss(jnp.asarray(logits), jnp.asarray(target),
                                 2.0)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_people_are_composed_by_score_and_parts_clipped_by_the_body():
  probs = np.zeros((1, 2, 4, 6, 3), np.float32)  # 2 parts + body
  probs[0, 0, :, :4, 2] = 0.9  # detection 0: columns 0-3
  probs[0, 1, :, 2:, 2] = 0.8  # detection 1: columns 2-5
  probs[0, 0, ..., 0] = 0.7  # part 1 everywhere for detection 0
  probs[0, 1, ..., 1] = 0.6  # part 2 everywhere for detection 1
  probs[0, 1, 0, :, 0] = 0.9  # ... but part 1 on its top row
  for scores, owner_of_overlap in (([0.9, 0.5], 1), ([0.4, 0.6], 2)):
    instances, parts = part_rcnn_evaluator.compose_people(
        jnp.asarray(probs), jnp.asarray([scores]), 0.1)
    instances, parts = np.asarray(instances[0]), np.asarray(parts[0])
    np.testing.assert_array_equal(instances[:, :2], 1)
    np.testing.assert_array_equal(instances[:, 4:], 2)
    np.testing.assert_array_equal(instances[:, 2:4], owner_of_overlap)
    np.testing.assert_array_equal(parts[:, :2], 1)
    np.testing.assert_array_equal(parts[1:, 4:], 2)
    np.testing.assert_array_equal(parts[0, 4:], 1)
  # A detection below the score threshold claims nothing; where no body
  # is, there are no parts, however likely they are.
  instances, parts = part_rcnn_evaluator.compose_people(
      jnp.asarray(probs), jnp.asarray([[0.05, 0.6]]), 0.1)
  np.testing.assert_array_equal(np.asarray(instances[0, :, :2]), 0)
  np.testing.assert_array_equal(np.asarray(parts[0, :, :2]), 0)


@pytest.mark.parametrize('mask_size', [56, 112])
def test_model_shapes_in_training_and_inference(mask_size):
  model = part_rcnn.PartRCNN(num_joints=17, features=8, levels=1,
                             head_features=8, head_convs=1,
                             mask_size=mask_size, max_detections=5,
                             max_rois=2)
  images = jnp.zeros((2, 32, 48, 3))
  variables = jax.jit(lambda r: model.init(r, images, train=False))(
      jax.random.key(0))
  infer = jax.jit(lambda v: model.apply(v, images, train=False))(variables)
  m = mask_size
  assert infer['rois'].shape == (2, 5, 4) and infer['scores'].shape == (2, 5)
  assert infer['mask_logits'].shape == (2, 5, m, m, 7)
  assert infer['keypoint_logits'].shape == (2, 5, m, m, 17)
  assert infer['center_logits'].shape == (2, 8, 12)
  boxes = jnp.tile(jnp.array([[[2.0, 2.0, 20.0, 30.0]]]), (2, 3, 1))
  train, _ = jax.jit(lambda v: model.apply(
      v, images, train=True, boxes=boxes, box_valid=jnp.ones((2, 3), bool),
      rngs={'jitter': jax.random.key(1)}, mutable=['batch_stats']))(variables)
  assert train['rois'].shape == (2, 2, 4) and train['roi_valid'].shape == (
      2, 2)
  assert train['mask_logits'].shape == (2, 2, m, m, 7)
  # Jittered by at most 10% of the box size, differently per box.
  shift = np.abs(np.asarray(train['rois']) - np.asarray(boxes[:, :2]))
  assert 0 < shift.max() <= 0.1 * 28 + 1e-4
  assert not np.allclose(train['rois'][0, 0], train['rois'][0, 1])


def test_loss_targets_each_rois_own_person():
  """Mask logits that equal each RoI's own person's targets score far
  lower than the same logits given to the other RoI."""
  config = recipe('part_rcnn', 'smoke')
  task = tasks.get(config.task)(config.loss, (32, 32))
  b, n, m = 1, 2, 8
  instance = np.zeros((b, 32, 32), np.uint8)
  instance[0, 4:20, 4:9] = 1  # person 1: an L in its box
  instance[0, 16:20, 4:14] = 1
  instance[0, 10:30, 18:28] = 2  # person 2 fills its box
  part_map = np.where(instance > 0, 2, 0).astype(np.uint8)  # torso
  part_map[0, 4:8] = np.where(instance[0, 4:8] > 0, 1, 0)  # head
  part_map[0, 26:30] = np.where(instance[0, 26:30] > 0, 6, 0)  # shanks
  boxes = np.array([[[4, 4, 14, 20], [18, 10, 28, 30]]], np.float32)
  batch = dict(
      boxes=jnp.asarray(boxes), person_valid=jnp.ones((b, n), bool),
      valid=jnp.ones((b,), bool), instance_map=jnp.asarray(instance),
      part_map=jnp.asarray(part_map), keypoints=jnp.zeros((b, n, 17, 3)))
  crops = roi_align.crop_labels(batch['instance_map'], batch['boxes'], m)
  parts = roi_align.crop_labels(batch['part_map'], batch['boxes'], m)
  body = crops == jnp.arange(1, n + 1)[None, :, None, None]
  part_logits = 20 * jax.nn.one_hot(parts.astype(jnp.int32) - 1, 6)
  good = jnp.concatenate([part_logits, 20 * (2 * body[..., None] - 1.0)],
                         -1)
  outputs = dict(
      center_logits=jnp.zeros((b, 8, 8)), log_sizes=jnp.zeros((b, 8, 8, 2)),
      offsets=jnp.zeros((b, 8, 8, 2)), rois=batch['boxes'],
      roi_valid=batch['person_valid'],
      keypoint_logits=jnp.zeros((b, n, m, m, 17)))
  right = task._roi_loss(dict(outputs, mask_logits=good), batch)
  swapped = task._roi_loss(dict(outputs, mask_logits=good[:, ::-1]), batch)
  for name in ('body', 'parts'):
    assert float(right[name]) < 1e-3 < float(swapped[name]), name
  # An invalid RoI is not scored.
  ignored = task._roi_loss(
      dict(outputs, mask_logits=good.at[:, 1].set(-good[:, 1]),
           roi_valid=jnp.array([[True, False]])), batch)
  assert float(ignored['body']) < 1e-3
  total, loss_parts = task.loss(dict(outputs, mask_logits=good), batch)
  assert set(loss_parts) == {'center', 'size', 'offset', 'body', 'parts',
                             'keypoint'}
  assert np.isfinite(float(total))


@pytest.mark.slow
def test_smoke_recipe_learns_to_detect_and_segment(tmp_path):
  """A shortened smoke run: boxes and parts of the validation people go
  from none found to clearly found."""
  config = recipe('part_rcnn', 'smoke', **{
      'dataset.synthetic.num_train': 512, 'dataset.synthetic.num_eval': 32,
      'total_steps': 300, 'log_every': 50, 'checkpoint_every': 0,
      'input.eval_batch_size': 32, 'model.head_features': 16})
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  first = metric_writer.read_metrics(str(tmp_path))[0]
  # When this was written: box AP 0 -> 0.055, part mIoU over matched
  # people NaN (nobody matched) -> 0.030.
  assert first['eval/box_ap'] == 0 and first['eval/matched_people'] == 0
  assert metrics['box_ap'] > 0.02, metrics
  assert metrics['part_miou_matched'] > 0.015, metrics


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('part_rcnn')
  config = recipe('part_rcnn', 'smoke', **{
      'model.features': 8, 'model.levels': 1, 'model.head_features': 8,
      'model.head_convs': 1, 'input.image_size': (32, 32),
      'dataset.synthetic.image_size': (32, 32), 'input.batch_size': 4,
      'input.eval_batch_size': 4, 'total_steps': 2, 'log_every': 1,
      'checkpoint_every': 0, 'eval_at_start': False,
      'eval.min_detection_score': 0.0})
  metrics = trainer.train_and_evaluate(config, str(workdir))
  return workdir, metrics


def test_run_reports_every_protocol(tiny_run):
  workdir, metrics = tiny_run
  assert {'box_ap', 'box_ar100', 'mask_ap', 'mask_ap50', 'oks_ap_detbox',
          'part_miou_matched', 'part_iou_matched/head',
          'matched_fraction'} <= set(metrics)
  line = metric_writer.read_metrics(str(workdir))[0]
  assert {'train/loss/center', 'train/loss/body', 'train/loss/parts',
          'train/loss/keypoint'} <= set(line)


def test_predict_draws_people_and_writes_results(tiny_run, tmp_path):
  workdir, _ = tiny_run
  images = tmp_path / 'data'
  synthetic.export(str(images), 2, seed=3, image_size=(40, 56))
  out = tmp_path / 'out'
  printed = run('hpe_jax.predict', f'--workdir={workdir}',
                f'--input={images / "images"}', f'--output={out}',
                '--min_box_score=0')
  assert '2 images' in printed
  stem = '000000000001'
  drawn = cv2.imread(str(out / f'{stem}.png'))
  instances = cv2.imread(str(out / f'{stem}_instances.png'),
                         cv2.IMREAD_UNCHANGED)
  parts = cv2.imread(str(out / f'{stem}_parts.png'), cv2.IMREAD_UNCHANGED)
  assert drawn.shape == (40, 56, 3)
  assert instances.shape == parts.shape == (40, 56)
  assert parts.max() <= 6 and ((parts > 0) <= (instances > 0)).all()
  with open(out / 'results.json') as f:
    results = json.load(f)
  assert results and {'image_id', 'bbox', 'score', 'keypoints',
                      'segmentation'} <= set(results[0])
  assert len(results[0]['keypoints']) == 17 * 3


def test_trains_on_coco_format_masks(shared_data, tmp_path):
  root = shared_data / 'fixtures' / 'ochuman'
  config = recipe('part_rcnn', 'smoke,coco', **{
      'dataset.root': str(root),
      'dataset.coco.train_annotations': 'test_ochuman.json',
      'dataset.coco.eval_annotations': 'test_ochuman.json',
      'dataset.coco.train_images': '.', 'dataset.coco.eval_images': '.',
      'model.features': 8, 'model.levels': 1, 'model.head_features': 8,
      'input.image_size': (64, 64), 'input.batch_size': 2,
      'input.eval_batch_size': 2, 'total_steps': 2, 'log_every': 1,
      'checkpoint_every': 0, 'eval_at_start': False})
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert {'box_ap', 'mask_ap', 'oks_ap_detbox'} <= set(metrics)
  # No part labels in COCO-format data: no part metrics.
  assert 'part_miou_matched' not in metrics
  line = metric_writer.read_metrics(str(tmp_path))[0]
  assert np.isfinite(line['train/loss/body'])


def test_one_and_eight_devices_give_the_same_losses(tmp_path):
  """Detector targets, RoI jitter and the RoI head do not depend on how
  the batch is split over devices."""
  flags = ['--config=configs/part_rcnn.py:smoke', '--config.model.features=8',
           '--config.model.levels=1', '--config.model.head_features=8',
           '--config.model.head_convs=1', '--config.input.image_size=(32,32)',
           '--config.dataset.synthetic.image_size=(32,32)',
           '--config.dataset.synthetic.num_train=64',
           '--config.dataset.synthetic.num_eval=8',
           '--config.input.batch_size=8', '--config.input.eval_batch_size=8',
           '--config.total_steps=3', '--config.log_every=1',
           '--config.checkpoint_every=0', '--config.eval_at_start=false',
           '--config.input.num_threads=1']
  losses = {}
  for devices in (1, 8):
    workdir = tmp_path / str(devices)
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
        f'--xla_force_host_platform_device_count={devices}'))
    proc = subprocess.run(
        [sys.executable, '-m', 'hpe_jax.main', f'--workdir={workdir}',
         *flags], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'Devices: {devices} ' in proc.stderr + proc.stdout
    losses[devices] = [
        [line[k] for k in sorted(line) if k.startswith('train/loss')]
        for line in metric_writer.read_metrics(str(workdir))
        if 'train/loss' in line]
  assert len(losses[1]) == 3 and len(losses[1][0]) == 7
  np.testing.assert_allclose(losses[8], losses[1], rtol=1e-4)
