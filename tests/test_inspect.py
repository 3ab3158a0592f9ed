"""The dataset doctor (`python -m hpe_jax.data.inspect`) on a folder dataset
with planted faults."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np

from conftest import ROOT
from test_folder_dataset import write_clothes
from test_folder_dataset import write_five_joints


def test_doctor_reports_damage_outside_labels_and_unlabelled_people(
    tmp_path):
  write_clothes(tmp_path, n=6)
  # The clothing images also get keypoints of a five-joint skeleton.
  write_five_joints(tmp_path / 'kp', n=6)
  people = json.loads((tmp_path / 'kp' / 'keypoints.json').read_text())
  people = {f'{i:03d}.jpg': people[f'img{i}.png'] for i in range(6)}
  people['002.jpg'][0]['keypoints'] = [[0, 0, 0]] * 5
  (tmp_path / 'keypoints.json').write_text(json.dumps(people))
  # Planted faults: an undecodable image and a label outside the schema.
  (tmp_path / 'images' / '004.jpg').write_bytes(b'not a jpeg')
  labels = cv2.imread(str(tmp_path / 'labels' / '005.png'), 0)
  labels[3, 3] = 77
  cv2.imwrite(str(tmp_path / 'labels' / '005.png'), labels)
  sheet = tmp_path / 'out' / 'sheet.png'
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.data.inspect',
       '--config=hpe_jax/data/config.py', '--split=train',
       '--config.dataset.name=folder', f'--config.dataset.root={tmp_path}',
       '--config.dataset.folder.part_maps=labels',
       f'--config.dataset.folder.part_schema={tmp_path / "clothes.json"}',
       '--config.dataset.folder.keypoints=keypoints.json',
       f'--config.dataset.folder.skeleton={tmp_path / "kp" / "five.json"}',
       '--config.dataset.folder.eval_fraction=0', f'--output={sheet}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  out = proc.stdout
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert 'folder_train: 6 images scanned' in out
  assert 'people without a labelled joint: 1' in out
  assert 'damaged samples: 1' in out and '004.jpg: image file cannot be' in out
  assert 'labels outside the schema: 1' in out
  assert '005.png: labels [77] are not in schema clothes' in out
  assert 'classes that never occur: cloth_01' in out
  assert '2 problem(s) found' in out
  assert 'labelled joints: head ' in out
  image = cv2.imread(str(sheet))
  # Four good examples in a row of 192-pixel cells, plus the legend strip.
  assert image.shape[1] >= 4 * 192 and image.shape[0] > 192
  assert os.path.getsize(sheet) > 10_000


def test_doctor_on_a_clean_dataset_exits_0(tmp_path):
  write_clothes(tmp_path, n=4)
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.data.inspect',
       '--config=hpe_jax/data/config.py', '--config.dataset.name=folder',
       f'--config.dataset.root={tmp_path}',
       '--config.dataset.folder.part_maps=labels',
       f'--config.dataset.folder.part_schema={tmp_path / "clothes.json"}',
       '--config.dataset.folder.train_list=train.txt',
       '--config.dataset.folder.eval_list=val.txt', '--output='],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert 'folder_train: 2 images scanned' in proc.stdout
  assert 'folder_eval: 2 images scanned' in proc.stdout
  pixels = [l for l in proc.stdout.splitlines() if 'part-map pixels' in l]
  assert len(pixels) == 2 and 'cloth_00' in pixels[0]
  assert np.isclose(sum(float(p.split()[-1].rstrip('%,')) for p in
                        pixels[0].split(': ', 1)[1].split(', ')), 100, atol=1)
