"""Training, evaluate and predict for the segmentation family: U-Net,
multi-task U-Net and the pose-conditioned mask network, on tiny synthetic
runs."""

import json
import subprocess
import sys

import cv2
import numpy as np
from pycocotools import mask as mask_utils
import pytest

from hpe_jax import errors
from hpe_jax.data import augment
from hpe_jax.data import example
from hpe_jax.data import synthetic
from hpe_jax.data import warp
from hpe_jax.runtime import metric_writer
from hpe_jax.training import trainer
from conftest import load_recipe
from conftest import override
from conftest import ROOT
from test_commands import run

TINY_DATA = {'dataset.synthetic.num_train': 64, 'dataset.synthetic.num_eval': 8,
             'input.num_threads': 1}


def recipe(name, arg, **overrides):
  return override(load_recipe(name, arg), {**TINY_DATA, **overrides})


def test_unet_learns_the_person_mask(tmp_path):
  config = recipe('unet', 'smoke', **{
      'model.features': 8, 'model.levels': 3, 'input.image_size': (48, 48),
      'dataset.synthetic.image_size': (48, 48), 'input.batch_size': 16,
      'dataset.synthetic.num_train': 256, 'dataset.synthetic.num_eval': 32,
      'total_steps': 150, 'log_every': 20, 'checkpoint_every': 0,
      'input.eval_batch_size': 32})
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  lines = metric_writer.read_metrics(str(tmp_path))
  first = lines[0]['eval/mask_dice']
  losses = [l['train/loss'] for l in lines if 'train/loss' in l]
  # When this was written: Dice 0.29 untrained -> 0.45 after 150 steps.
  assert losses[-1] < 0.9 * losses[0], losses
  assert metrics['mask_dice'] > first + 0.08, (first, metrics)
  assert {'train/loss/mask_dice', 'train/loss/mask_ce'} <= set(lines[1])


@pytest.fixture(scope='module')
def multitask_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('multitask')
  config = recipe('unet_multitask', 'triple,smoke', **{
      'model.features': 4, 'model.levels': 2, 'input.image_size': (32, 32),
      'dataset.synthetic.image_size': (32, 32), 'input.batch_size': 8,
      'input.eval_batch_size': 8, 'total_steps': 4, 'log_every': 2,
      'checkpoint_every': 0, 'eval_at_start': False})
  metrics = trainer.train_and_evaluate(config, str(workdir))
  return workdir, metrics


def test_multitask_run_reports_mask_and_both_joint_heads(multitask_run):
  workdir, metrics = multitask_run
  assert {'mask_dice', 'mask_iou', 'regression_pck@0.2_torso',
          'softmax_pck@0.2_torso'} <= set(metrics)
  line = metric_writer.read_metrics(str(workdir))[-1]
  assert {'train/loss/joint_regression', 'train/loss/joint_softmax'} <= set(
      metric_writer.read_metrics(str(workdir))[0]), line


def test_multitask_evaluate_with_flip_and_predict(multitask_run,
                                                  synthetic_images, tmp_path):
  workdir, _ = multitask_run
  out = run('hpe_jax.evaluate', f'--workdir={workdir}',
            '--config.eval.flip=true')
  assert 'mask_dice_flip' in out and 'softmax_pck@0.2_torso_flip' in out
  with open(workdir / 'eval' / 'step4_flip.json') as f:
    assert 'mask_iou_flip' in json.load(f)['metrics']
  run('hpe_jax.predict', f'--workdir={workdir}',
      f'--input={synthetic_images / "images"}', f'--output={tmp_path}')
  stem = '000000000001'
  drawn = cv2.imread(str(tmp_path / f'{stem}.png'))
  labels = cv2.imread(str(tmp_path / f'{stem}_labels.png'),
                      cv2.IMREAD_UNCHANGED)
  assert drawn.shape == (48, 64, 3) and labels.shape == (48, 64)
  assert set(np.unique(labels)) <= {0, 1}
  with open(tmp_path / f'{stem}.json') as f:
    joints = json.load(f)['joints']
  assert set(joints) == {'regression', 'softmax'}
  assert np.array(joints['softmax']).shape == (17, 2)


@pytest.fixture(scope='module')
def pose_mask_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('pose_mask')
  config = recipe('pose_mask', 'smoke', **{
      'model.features': 4, 'model.levels': 2, 'input.image_size': (32, 32),
      'input.batch_size': 8, 'input.eval_batch_size': 8, 'total_steps': 4,
      'log_every': 2, 'checkpoint_every': 0, 'eval_at_start': False})
  metrics = trainer.train_and_evaluate(config, str(workdir))
  return workdir, metrics


def test_pose_mask_run_scores_model_and_prior(pose_mask_run):
  _, metrics = pose_mask_run
  assert {'mask_iou', 'mask_dice', 'prior/mask_iou'} <= set(metrics)
  assert 0 < metrics['prior/mask_iou'] < 1


def test_pose_mask_evaluate_and_predict_from_poses(pose_mask_run,
                                                   synthetic_images, tmp_path):
  workdir, metrics = pose_mask_run
  out = run('hpe_jax.evaluate', f'--workdir={workdir}')
  assert f'{metrics["mask_iou"]:.4f}' in out
  out = run('hpe_jax.predict', f'--workdir={workdir}',
            f'--input={synthetic_images / "images"}', f'--output={tmp_path}',
            f'--poses={synthetic_images / "poses.json"}')
  with open(synthetic_images / 'annotations.json') as f:
    people = len(json.load(f)['annotations'])
  assert f'{people} people' in out
  labels = cv2.imread(str(tmp_path / '000000000001_labels.png'),
                      cv2.IMREAD_UNCHANGED)
  assert labels.shape == (48, 64) and labels.max() >= 1


def test_pose_mask_predict_needs_poses(pose_mask_run, synthetic_images,
                                       tmp_path):
  workdir, _ = pose_mask_run
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.predict',
       f'--workdir={workdir}', f'--input={synthetic_images / "images"}',
       f'--output={tmp_path}'], cwd=ROOT, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode != 0 and '--poses' in proc.stderr


def test_labels_map_back_to_the_image():
  labels = np.zeros((40, 60), np.uint8)
  labels[10:30, 5:25] = 1
  labels[12:20, 40:55] = 2
  geometry = warp.Geometry((32, 32), 1)
  crop = augment.sample_crop(None, example.image_box(40, 60), None, None,
                             1.0, 1.0, None)
  w = warp.make_warp(crop, geometry)
  grid = warp.warp_labels(labels, w, geometry)
  back = warp.labels_to_image(grid, w.to_output, labels.shape)
  assert back.shape == labels.shape
  # A 60-pixel side letterboxed into 32: each grid pixel covers about two
  # image pixels, so edges move by up to a pixel but shapes stay in place.
  for label in (1, 2):
    inter = ((back == label) & (labels == label)).sum()
    union = ((back == label) | (labels == label)).sum()
    assert inter / union > 0.75, label
    np.testing.assert_allclose(np.argwhere(back == label).mean(0),
                               np.argwhere(labels == label).mean(0), atol=1)


TINY_UNET = {'model.features': 4, 'model.levels': 2,
             'input.image_size': (32, 32), 'input.batch_size': 4,
             'input.eval_batch_size': 4, 'total_steps': 2, 'log_every': 1,
             'checkpoint_every': 0, 'eval_at_start': False}


def test_unet_learns_parts_from_cihp(shared_data, tmp_path):
  config = recipe('unet', 'smoke,cihp', **TINY_UNET, **{
      'dataset.root': str(shared_data / 'cihp'),
      'dataset.cihp.eval_list': 'list/val_id.txt'})
  assert config.model.num_classes == 20
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert {'part_miou', 'part_iou/face', 'part_iou/background',
          'mask_iou_pooled'} <= set(metrics)
  assert 0 <= metrics['part_miou'] <= 1


def test_unet_on_coco_person_masks(shared_data, tmp_path):
  root = shared_data / 'fixtures' / 'coco'
  config = recipe('unet', 'smoke,coco', **TINY_UNET, **{
      'dataset.root': str(root),
      'dataset.coco.train_annotations': 'test_coco.json',
      'dataset.coco.eval_annotations': 'test_coco.json',
      'dataset.coco.train_images': '.', 'dataset.coco.eval_images': '.'})
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics['mask_dice']) and 0 <= metrics['mask_iou'] <= 1


@pytest.fixture(scope='module')
def coco_instances(tmp_path_factory):
  """A COCO instances file over 12 synthetic 48x48 images, some without
  people: person masks as polygons (every other person) or RLE, no
  keypoints, categories without a keypoints field."""
  root = tmp_path_factory.mktemp('instances')
  synthetic.export(str(root), 12, seed=3, image_size=(48, 48), min_people=0,
                   max_people=2)
  data = json.loads((root / 'annotations.json').read_text())
  for ann in data['annotations']:
    del ann['keypoints'], ann['num_keypoints']
    if ann['id'] % 2:
      contours, _ = cv2.findContours(
          mask_utils.decode(ann['segmentation']), cv2.RETR_EXTERNAL,
          cv2.CHAIN_APPROX_SIMPLE)
      ann['segmentation'] = [c.ravel().tolist() for c in contours
                             if len(c) >= 3] or ann['segmentation']
  data['categories'] = [dict(id=1, name='person', supercategory='person'),
                        dict(id=3, name='car', supercategory='vehicle')]
  (root / 'instances.json').write_text(json.dumps(data))
  with_people = {a['image_id'] for a in data['annotations']}
  assert 0 < len(with_people) < 12
  return root, len(with_people)


def coco_flags(root, annotations='instances.json'):
  return [f'--config.dataset.root={root}',
          f'--config.dataset.coco.train_annotations={annotations}',
          f'--config.dataset.coco.eval_annotations={annotations}',
          '--config.dataset.coco.train_images=images',
          '--config.dataset.coco.eval_images=images']


def test_unet_trains_evaluates_and_predicts_on_a_coco_instances_file(
    coco_instances, tmp_path):
  root, with_people = coco_instances
  workdir = tmp_path / 'run'
  run('hpe_jax.main', '--config=configs/unet.py:smoke,coco',
      f'--workdir={workdir}', *coco_flags(root),
      *(f'--config.{k}={v}' for k, v in TINY_UNET.items()),
      '--config.input.num_threads=1')
  final = metric_writer.read_metrics(str(workdir))[-1]
  # All-background targets score 0 (1 if nothing is predicted either).
  assert 0 < final['eval/mask_dice_pooled'] < 1, final

  run('hpe_jax.evaluate', f'--workdir={workdir}',
      '--config.dataset.coco.skip_empty_images=true')
  saved = json.loads((workdir / 'eval' / 'step2.json').read_text())
  assert saved['examples'] == with_people
  assert 0 < saved['metrics']['mask_dice_pooled'] < 1

  out = tmp_path / 'predicted'
  run('hpe_jax.predict', f'--workdir={workdir}',
      f'--input={root / "images"}', f'--output={out}')
  labels = [cv2.imread(str(out / f'{p.stem}_labels.png'),
                       cv2.IMREAD_UNCHANGED)
            for p in sorted((root / 'images').iterdir())]
  assert len(labels) == 12 and all(l.shape == (48, 48) for l in labels)
  labels = np.stack(labels)
  assert set(np.unique(labels)) <= {0, 1} and labels.any()


def test_keypoint_recipe_on_a_coco_instances_file_stops_with_one_line(
    coco_instances, tmp_path):
  root, _ = coco_instances
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.main',
       '--config=configs/hourglass.py:smoke,coco', f'--workdir={tmp_path}',
       *coco_flags(root), '--config.model.num_stacks=1'], cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr.splitlines()[-1] == (
      f'hpe_jax.main: {root / "instances.json"}: 0 people with keypoints; '
      'keypoint recipes need keypoints (mask recipes can use its person '
      'masks)'), proc.stderr
  assert 'Traceback' not in proc.stderr


def test_unet_on_a_coco_file_without_people_stops(coco_instances,
                                                  tmp_path):
  root, _ = coco_instances
  data = json.loads((root / 'instances.json').read_text())
  for ann in data['annotations']:
    ann['category_id'] = 3
  (tmp_path / 'cars.json').write_text(json.dumps(data))
  config = recipe('unet', 'smoke,coco', **TINY_UNET, **{
      'dataset.root': str(root),
      'dataset.coco.train_annotations': str(tmp_path / 'cars.json'),
      'dataset.coco.eval_annotations': str(tmp_path / 'cars.json'),
      'dataset.coco.train_images': 'images',
      'dataset.coco.eval_images': 'images'})
  with pytest.raises(errors.DataError, match=(
      r'cars.json: 0 people with masks; mask recipes need person masks$')):
    trainer.train_and_evaluate(config, str(tmp_path / 'run'))
