"""The evaluate and predict commands, and training on the real datasets."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hpe_jax.data import synthetic
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.runtime import metric_writer
from hpe_jax.training import trainer
from conftest import ROOT


def run(module, *flags):
  proc = subprocess.run([sys.executable, '-m', module, *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc.stdout


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_config):
  workdir = tmp_path_factory.mktemp('run')
  trainer.train_and_evaluate(tiny_config(), str(workdir))
  return workdir


def test_evaluate_with_flip_test_writes_named_metrics(trained):
  out = run('hpe_jax.evaluate', f'--workdir={trained}',
            '--config.eval.flip=true', '--checkpoint=best')
  assert 'pck@0.2_torso_flip' in out
  with open(trained / 'eval' / 'step8_gtbox_flip.json') as f:
    saved = json.load(f)
  assert saved['step'] == 8 and saved['flip'] is True
  assert set(saved['metrics']) == {'pck@0.2_torso_flip', 'pckh@0.5_flip',
                                   'damaged_examples'}
  with open(trained / 'eval' / 'step8_gtbox_flip_results.json') as f:
    results = json.load(f)
  assert len(results) == saved['examples']
  assert len(results[0]['keypoints']) == 17 * 3


def test_predict_writes_every_good_image_and_lists_damaged_ones(
    trained, tmp_path):
  synthetic.export(str(tmp_path / 'data'), 3, seed=5, image_size=(64, 80))
  images = tmp_path / 'data' / 'images'
  names = sorted(os.listdir(images))
  broken = images / names[1]
  broken.write_bytes(broken.read_bytes()[:60])
  out = tmp_path / 'out'
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.predict', f'--workdir={trained}',
       f'--input={images}', f'--output={out}'], cwd=ROOT,
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 1, proc.stderr
  assert '2 images' in proc.stdout and '1 damaged images skipped' in (
      proc.stdout)
  assert f'{broken}: image file cannot be decoded' in proc.stdout
  good = [n[:-4] for n in names if n != names[1]]
  assert sorted(p for p in os.listdir(out) if p.endswith('.png')) == [
      f'{stem}.png' for stem in good]
  assert len(json.loads((out / 'results.json').read_text())) == 2


def test_evaluate_rejects_unknown_config_keys(trained):
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.evaluate', f'--workdir={trained}',
       '--config.eval.no_such_key=1'], cwd=ROOT, capture_output=True,
      text=True, timeout=300)
  assert proc.returncode != 0 and 'no_such_key' in proc.stderr


def test_predict_draws_and_writes_coco_results(trained, tmp_path):
  synthetic.export(str(tmp_path / 'data'), 3, seed=5, image_size=(64, 80))
  images = tmp_path / 'data' / 'images'
  out = tmp_path / 'out'
  run('hpe_jax.predict', f'--workdir={trained}', f'--input={images}',
      f'--output={out}')
  stems = sorted(p[:-4] for p in os.listdir(images))
  for stem in stems:
    drawn = cv2.imread(str(out / f'{stem}.png'))
    assert drawn.shape == (64, 80, 3)
    people = json.loads((out / f'{stem}.json').read_text())
    assert len(people) == 1  # no boxes: the whole image is one person
    assert people[0]['image_id'] == int(stem)
    assert len(people[0]['keypoints']) == 51
  assert len(json.loads((out / 'results.json').read_text())) == 3

  # With a detection file, one result per box above the score threshold.
  dets = [{'image_id': int(stems[0]), 'category_id': 1, 'score': 0.9,
           'bbox': [2, 2, 30, 50]},
          {'image_id': int(stems[0]), 'category_id': 1, 'score': 0.8,
           'bbox': [40, 5, 30, 50]},
          {'image_id': int(stems[1]), 'category_id': 1, 'score': 0.1,
           'bbox': [2, 2, 30, 50]}]
  (tmp_path / 'dets.json').write_text(json.dumps(dets))
  run('hpe_jax.predict', f'--workdir={trained}', f'--input={images}',
      f'--output={tmp_path / "boxed"}', f'--boxes={tmp_path / "dets.json"}')
  counts = [len(json.loads((tmp_path / 'boxed' / f'{s}.json').read_text()))
            for s in stems]
  assert counts == [2, 0, 0]


def test_trains_and_evaluates_on_the_coco_fixture(shared_data, tmp_path,
                                                  tiny_config):
  root = shared_data / 'fixtures' / 'coco'
  config = tiny_config(**{
      'dataset.name': 'coco', 'dataset.root': str(root),
      'dataset.coco.train_annotations': 'test_coco.json',
      'dataset.coco.eval_annotations': 'test_coco.json',
      'dataset.coco.train_images': '.', 'dataset.coco.eval_images': '.',
      'total_steps': 2})
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert {'pck@0.2_torso', 'oks_ap_gtbox', 'oks_ar_gtbox'} <= set(metrics)
  assert all(np.isfinite(v) for v in metrics.values())

  # Top-down evaluation from the fixture's 118 detected boxes.
  detections = root / 'test_coco_det_AP_H_56.json'
  out = run('hpe_jax.evaluate', f'--workdir={tmp_path}',
            f'--config.eval.boxes={detections}')
  saved = json.loads((tmp_path / 'eval' / 'step2_detbox.json').read_text())
  assert saved['examples'] == 118
  assert set(saved['metrics']) == {
      f'{name}_detbox' for name in coco_keypoints.METRIC_NAMES} | {
          'damaged_examples'}
  assert 'oks_ap_detbox' in out


def test_trains_and_evaluates_on_lsp(shared_data, tmp_path, tiny_config):
  config = tiny_config(**{
      'dataset.name': 'lsp', 'dataset.root': str(shared_data),
      'dataset.lsp.use_lspet': False, 'total_steps': 2,
      'input.eval_batch_size': 200})
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert set(metrics) == {'pck@0.2_torso', 'damaged_examples'}
  evals = [l for l in metric_writer.read_metrics(str(tmp_path))
           if 'eval/pck@0.2_torso' in l]
  assert len(evals) == 1 and evals[0]['step'] == 2
