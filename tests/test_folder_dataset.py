"""Your own data (`dataset.name=folder`): the layouts users bring, read,
trained on, evaluated and predicted through the normal commands.

Each layout is written from synthetic people, so the labels are right and a
model can learn them:

* pedestrians: ``PNGImages/``, instance PNGs ``PedMasks/<stem>_mask.png`` and
  box text files ``Annotation/<stem>.txt`` (the Penn-Fudan layout);
* clothing parsing: ``images/`` and 59-class label PNGs with no left/right
  classes, declared by a schema file;
* a custom 5-joint skeleton: ``images/`` and a keypoints JSON.
"""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hpe_jax.data import datasets
from hpe_jax.data import example
from hpe_jax.data import folder
from hpe_jax.data import synthetic
from conftest import ROOT
from test_commands import run

# Five COCO-17 joints under names with no left_/right_ prefix.
FIVE = ['head', 'lhand', 'rhand', 'lfoot', 'rfoot']
FIVE_FROM_COCO = [0, 9, 10, 15, 16]
# The six body parts spread over a 59-class clothing vocabulary.
PARTS_TO_CLOTHES = np.array([0, 5, 12, 19, 31, 41, 58], np.uint8)


def _people(n, seed=0, size=(64, 64)):
  return synthetic.SyntheticPeople(n, seed=seed, image_size=size,
                                   max_people=2)


def write_pedestrians(root, n=12):
  for d in ('PNGImages', 'PedMasks', 'Annotation'):
    os.makedirs(root / d)
  data = _people(n)
  for i in range(n):
    ex = data[i]
    stem = f'Ped{i:05d}'
    cv2.imwrite(str(root / 'PNGImages' / f'{stem}.png'), ex['image'][..., ::-1])
    ids = np.zeros(ex['image'].shape[:2], np.uint8)
    for k, mask in enumerate(ex['person_masks']):
      ids[mask > 0] = k + 1
    cv2.imwrite(str(root / 'PedMasks' / f'{stem}_mask.png'), ids)
    boxes = example.boxes_from_masks(ex['person_masks'])
    (root / 'Annotation' / f'{stem}.txt').write_text(
        '# x1 y1 x2 y2\n' + ''.join(f'{b[0]:g}, {b[1]:g}, {b[2]:g}, {b[3]:g}\n'
                                    for b in boxes))
  return data


def write_clothes(root, n=12):
  os.makedirs(root / 'images')
  os.makedirs(root / 'labels')
  data = _people(n, seed=1)
  for i in range(n):
    ex = data[i]
    cv2.imwrite(str(root / 'images' / f'{i:03d}.jpg'), ex['image'][..., ::-1])
    labels = np.where(ex['part_map'] == 255, 255,
                      PARTS_TO_CLOTHES[np.minimum(ex['part_map'], 6)])
    cv2.imwrite(str(root / 'labels' / f'{i:03d}.png'), labels.astype(np.uint8))
  (root / 'clothes.json').write_text(json.dumps(dict(
      kind='parts', labels=[f'cloth_{c:02d}' for c in range(59)])))
  (root / 'val.txt').write_text('000\n001\n')
  (root / 'train.txt').write_text(''.join(f'{i:03d}\n' for i in range(2, n)))
  return data


def write_five_joints(root, n=24, size=(64, 64)):
  os.makedirs(root / 'images')
  data = _people(n, seed=2, size=size)
  people = {}
  for i in range(n):
    ex = data[i]
    cv2.imwrite(str(root / 'images' / f'img{i}.png'), ex['image'][..., ::-1])
    people[f'img{i}.png'] = [
        {'keypoints': kp[FIVE_FROM_COCO].tolist(), 'box': box.tolist()}
        for kp, box in zip(ex['keypoints'], ex['boxes'])]
  (root / 'keypoints.json').write_text(json.dumps(people))
  (root / 'five.json').write_text(json.dumps(dict(
      kind='skeleton', joints=FIVE,
      limbs=[['head', 'lhand'], ['head', 'rhand'], ['head', 'lfoot'],
             ['head', 'rfoot']],
      mirror_pairs=[['lhand', 'rhand'], ['lfoot', 'rfoot']],
      torso=['head', 'lfoot'], head=['head', 'lhand'])))
  return data


def folder_config(root, **fields):
  cfg = datasets.default_config()
  cfg.name = 'folder'
  cfg.root = str(root)
  cfg.folder.update(fields)
  return cfg


PEDESTRIANS = dict(images='PNGImages', instances='PedMasks/{stem}_mask.png',
                   boxes='Annotation', eval_fraction=0.25)


def test_pedestrian_layout_pairs_masks_and_boxes_by_stem(tmp_path):
  data = write_pedestrians(tmp_path)
  cfg = folder_config(tmp_path, **PEDESTRIANS)
  train, val = datasets.build(cfg, 'train'), datasets.build(cfg, 'eval')
  assert len(train) + len(val) == 12 and len(val) >= 1
  paths = {train.annotation(i)['image_path'] for i in range(len(train))}
  assert not paths & {val.annotation(i)['image_path'] for i in range(len(val))}
  assert val.has_masks and val.skeleton is None and val.part_schema is None
  ex = val[0]
  source = data[int(os.path.basename(ex['image_path'])[3:8])]
  np.testing.assert_array_equal(ex['person_masks'], source['person_masks'])
  np.testing.assert_allclose(ex['boxes'],
                             example.boxes_from_masks(source['person_masks']))
  assert ex['keypoints'].shape == (len(ex['boxes']), 0, 3)


def test_hash_split_is_stable_as_images_are_added():
  stems = [f'im{i}' for i in range(200)]
  val = folder.split_by_hash(stems, 0.2, 'eval')
  assert 20 < len(val) < 60
  assert set(folder.split_by_hash(stems + ['new1', 'new2'], 0.2, 'eval')) >= (
      set(val))
  assert not set(val) & set(folder.split_by_hash(stems, 0.2, 'train'))
  assert folder.split_by_hash(['a', 'b'], 0.1, 'eval') != []


def test_damaged_files_are_samples_and_mismatches_say_what(tmp_path):
  write_pedestrians(tmp_path, n=4)
  (tmp_path / 'Annotation' / 'Ped00001.txt').write_text('1 2 3\n')
  os.remove(tmp_path / 'PedMasks' / 'Ped00002_mask.png')
  with open(tmp_path / 'Annotation' / 'Ped00003.txt', 'a') as f:
    f.write('1 1 5 5\n')
  cfg = folder_config(tmp_path, **{**PEDESTRIANS, 'eval_fraction': 0.0})
  data = datasets.build(cfg, 'train')
  reasons = []
  for i in range(4):
    try:
      data[i]
    except example.DamagedSampleError as e:
      reasons.append(str(e))
  assert len(reasons) == 3, reasons
  assert 'line 1 is not "x1 y1 x2 y2"' in reasons[0]
  assert 'label file is missing' in reasons[1] or 'missing' in reasons[1]
  assert 'people counts differ' in reasons[2]


def test_clothing_layout_reads_59_classes_and_rejects_others(tmp_path):
  write_clothes(tmp_path)
  cfg = folder_config(tmp_path, part_maps='labels',
                      part_schema=str(tmp_path / 'clothes.json'),
                      train_list='train.txt', eval_list='val.txt')
  val = datasets.build(cfg, 'eval')
  assert len(val) == 2 and val.part_schema.num_labels == 59
  assert set(np.unique(val[0]['part_map'])) <= set(PARTS_TO_CLOTHES) | {255}
  labels = cv2.imread(str(tmp_path / 'labels' / '001.png'), 0)
  labels[0, 0] = 70
  cv2.imwrite(str(tmp_path / 'labels' / '001.png'), labels)
  with pytest.raises(example.DamagedSampleError, match=r'labels \[70\]'):
    val[1]


@pytest.mark.parametrize('fields, message', [
    (dict(images='nope'), 'no such image file or folder'),
    (dict(part_maps='labels'), 'needs dataset.folder.part_schema'),
    (dict(keypoints='k.json', skeleton='coco17'), 'cannot read keypoints'),
    (dict(train_list='missing.txt'), 'list file does not exist'),
    (dict(instances='masks/{stem}.png'), 'folder of dataset.folder.instances'),
])
def test_setup_mistakes_are_one_line_errors(tmp_path, fields, message):
  write_clothes(tmp_path, n=2)
  with pytest.raises(example.DatasetError, match=message):
    datasets.build(folder_config(tmp_path, **fields), 'train')


def test_keypoints_json_with_a_custom_skeleton(tmp_path):
  data = write_five_joints(tmp_path, n=6)
  cfg = folder_config(tmp_path, keypoints='keypoints.json',
                      skeleton=str(tmp_path / 'five.json'), eval_fraction=0.0)
  assert datasets.skeleton(cfg).joint_names == tuple(FIVE)
  train = datasets.build(cfg, 'train')
  ex = train[3]
  np.testing.assert_allclose(ex['keypoints'],
                             data[3]['keypoints'][:, FIVE_FROM_COCO])
  np.testing.assert_allclose(ex['boxes'], data[3]['boxes'])


def _flags(root, config, *fields):
  return [f'--config={config}', '--config.dataset.name=folder',
          f'--config.dataset.root={root}', '--config.input.num_threads=1',
          *[f'--config.dataset.folder.{f}' for f in fields]]


TINY_UNET = ['--config.model.features=8', '--config.model.levels=2',
             '--config.input.image_size=(32,32)', '--config.input.batch_size=8',
             '--config.input.eval_batch_size=4', '--config.log_every=10',
             '--config.checkpoint_every=0']


def _metrics(workdir):
  with open(workdir / 'metrics.jsonl') as f:
    return [json.loads(line) for line in f]


def test_train_evaluate_predict_on_pedestrians(tmp_path):
  write_pedestrians(tmp_path / 'data', n=16)
  workdir = tmp_path / 'run'
  flags = _flags(tmp_path / 'data', 'configs/unet.py:smoke',
                 'images=PNGImages', 'instances=PedMasks/{stem}_mask.png',
                 'boxes=Annotation', 'eval_fraction=0.25')
  run('hpe_jax.main', *flags, *TINY_UNET, '--config.total_steps=60',
      f'--workdir={workdir}')
  evals = [m for m in _metrics(workdir) if 'eval/mask_dice' in m]
  # An all-background model scores Dice 0; the people cover ~10%.
  assert evals[-1]['eval/mask_dice'] > max(0.2, evals[0]['eval/mask_dice'])
  out = run('hpe_jax.evaluate', f'--workdir={workdir}')
  assert 'mask_dice' in out
  run('hpe_jax.predict', f'--workdir={workdir}',
      f'--input={tmp_path / "data" / "PNGImages"}', f'--output={tmp_path / "p"}')
  written = os.listdir(tmp_path / 'p')
  assert len([f for f in written if f.endswith('_labels.png')]) == 16
  labels = cv2.imread(str(tmp_path / 'p' / 'Ped00000_labels.png'), 0)
  assert labels.shape == (64, 64) and set(np.unique(labels)) <= {0, 1}


def test_train_evaluate_predict_on_59_clothing_classes(tmp_path):
  write_clothes(tmp_path / 'data', n=16)
  workdir = tmp_path / 'run'
  flags = _flags(tmp_path / 'data', 'configs/unet.py:smoke', 'part_maps=labels',
                 f'part_schema={tmp_path / "data" / "clothes.json"}',
                 'train_list=train.txt', 'eval_list=val.txt')
  run('hpe_jax.main', *flags, *TINY_UNET, '--config.total_steps=60',
      '--config.loss.mask_target=part_map', '--config.model.num_classes=59',
      f'--workdir={workdir}')
  final = _metrics(workdir)[-1]
  assert 'eval/part_iou/cloth_58' in final and final['eval/part_miou'] > 0
  out = run('hpe_jax.evaluate', f'--workdir={workdir}')
  assert 'part_miou' in out
  run('hpe_jax.predict', f'--workdir={workdir}',
      f'--input={tmp_path / "data" / "images" / "000.jpg"}',
      f'--output={tmp_path / "p"}')
  assert os.path.exists(tmp_path / 'p' / '000.png')


def test_train_evaluate_predict_on_a_five_joint_skeleton(tmp_path):
  write_five_joints(tmp_path / 'data', n=48)
  workdir = tmp_path / 'run'
  flags = _flags(tmp_path / 'data', 'configs/hourglass.py:smoke',
                 'keypoints=keypoints.json',
                 f'skeleton={tmp_path / "data" / "five.json"}',
                 'eval_fraction=0.2')
  run('hpe_jax.main', *flags, '--config.model.num_stacks=1',
      '--config.model.features=16', '--config.input.image_size=(32,32)',
      '--config.input.batch_size=16', '--config.total_steps=100',
      '--config.log_every=20', '--config.checkpoint_every=0',
      f'--workdir={workdir}')
  lines = _metrics(workdir)
  # PCKh from the skeleton's head joints, and per-joint figures.
  assert {'eval/pck@0.2_torso', 'eval/pckh@0.5', 'eval/pck@0.2_torso/rfoot',
          'eval/pckh@0.5/lhand'} <= set(lines[-1])
  losses = [m['train/loss'] for m in lines if 'train/loss' in m]
  assert losses[-1] < losses[0]
  out = run('hpe_jax.evaluate', f'--workdir={workdir}')
  assert 'pck@0.2_torso' in out
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.predict', f'--workdir={workdir}',
       f'--input={tmp_path / "data" / "images"}', f'--output={tmp_path / "p"}'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  results = json.loads((tmp_path / 'p' / 'results.json').read_text())
  assert len(results[0]['keypoints']) == 5 * 3
