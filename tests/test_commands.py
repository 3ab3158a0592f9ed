"""The evaluate, predict and show_batch commands, what predict draws, and
training on the real datasets."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hpe_jax import tasks
from hpe_jax import visualization
from hpe_jax.data import skeletons
from hpe_jax.data import synthetic
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.runtime import metric_writer
from hpe_jax.training import trainer
from conftest import load_recipe
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
  per_joint = {f'{m}/{j}' for m in ('pck@0.2_torso_flip', 'pckh@0.5_flip')
               for j in skeletons.COCO17.joint_names}
  assert set(saved['metrics']) == {'pck@0.2_torso_flip', 'pckh@0.5_flip',
                                   'damaged_examples'} | per_joint
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
  out = tmp_path / 'out' / 'nested'  # made with its parents
  printed = run('hpe_jax.predict', f'--workdir={trained}',
                f'--input={images}', f'--output={out}')
  stems = sorted(p[:-4] for p in os.listdir(images))
  for stem in stems:
    drawn = cv2.imread(str(out / f'{stem}.png'))
    assert drawn.shape == (64, 80, 3)
    people = json.loads((out / f'{stem}.json').read_text())
    assert len(people) == 1  # no boxes: the whole image is one person
    assert people[0]['image_id'] == int(stem)
    assert len(people[0]['keypoints']) == 51
  results = json.loads((out / 'results.json').read_text())
  assert len(results) == 3
  # The summary counts the joints at or below the threshold (drawn faintly).
  scores = np.array([r['keypoints'] for r in results]).reshape(3, 17, 3)[
      ..., 2]
  above = scores > 0.2
  assert (f'3 images, 3 people, {above.any(1).sum()} with a joint above the '
          f'keypoint threshold 0.2; {(~above).sum()} of 51 joints at or '
          'below it') in printed, printed

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


def _change(drawn: np.ndarray) -> int:
  """How much a drawing on a black image changed it."""
  return int(drawn.astype(np.int64).sum())


def test_joints_below_the_threshold_are_drawn_faintly():
  xy = np.random.default_rng(0).uniform(8, 56, (17, 2))
  black = np.zeros((64, 64, 3), np.uint8)

  def draw(score, faint=True):
    kp = np.concatenate([xy, np.full((17, 1), score)], -1)
    return visualization.draw_skeleton(black, kp, skeletons.COCO17,
                                       threshold=0.2, faint=faint)

  strong, weak = _change(draw(0.9)), _change(draw(0.1))
  assert 0 < weak < strong / 2, (weak, strong)
  assert _change(draw(0.1, faint=False)) == 0  # left out, as for labels
  # Faint joints sit where the model put them.
  x, y = np.round(xy[0]).astype(int)
  assert draw(0.1)[y - 3:y + 4, x - 3:x + 4].any()


def test_left_and_right_limbs_and_joints_differ_in_colour():
  skeleton = skeletons.COCO17
  kp = np.zeros((17, 3), np.float32)
  for name, x in (('left', 16), ('right', 48)):
    kp[skeleton.index(f'{name}_elbow')] = (x, 8, 0.9)
    kp[skeleton.index(f'{name}_wrist')] = (x, 56, 0.9)
  drawn = visualization.draw_skeleton(np.zeros((64, 64, 3), np.uint8), kp,
                                      skeleton, radius=4, thickness=3)
  left, right = visualization.SIDE_COLORS[-1], visualization.SIDE_COLORS[1]
  assert left != right
  # The forearms at mid-height and the wrists.
  assert tuple(drawn[32, 16]) == left and tuple(drawn[56, 16]) == left
  assert tuple(drawn[32, 48]) == right and tuple(drawn[56, 48]) == right


def _colours(image: np.ndarray) -> set:
  return set(map(tuple, image.reshape(-1, 3)))


def test_part_map_legend_shows_the_present_labels_in_their_colours():
  names = skeletons.BODY_PARTS6.label_names
  image = np.full((40, 60, 3), 30, np.uint8)
  labels = np.zeros((20, 30), np.uint8)
  labels[2:8, 2:8], labels[10:15, 5:20] = 2, 5
  palette = visualization.label_palette()
  shown = visualization.add_legend(image, labels, names)
  assert shown.shape[0] > 40 and (shown[:40] == image).all()
  strip = _colours(shown[40:])
  assert {tuple(palette[2]), tuple(palette[5])} <= strip
  assert not {tuple(palette[1]), tuple(palette[3])} & strip
  # A schema's own colours, as in the overlay.
  colors = [(0, 0, 0)] + [(10 * i, 200, 100) for i in range(1, len(names))]
  strip = _colours(visualization.add_legend(image, labels, names, colors)[40:])
  assert {colors[2], colors[5]} <= strip
  assert (visualization.add_legend(image, labels * 0, names) == image).all()

  # Predicted part maps are drawn with it.
  task = tasks.make(load_recipe('unet', 'parts,smoke'))
  drawn = task.draw(image, {'label_images': {'labels': labels}, 'joints': {},
                            'part_schema': skeletons.BODY_PARTS6},
                    None, 0.2)
  assert drawn.shape[0] > 40 and tuple(palette[5]) in _colours(drawn[40:])


def test_show_batch_makes_its_output_folder(tmp_path):
  command = [sys.executable, '-m', 'hpe_jax.data.show_batch',
             '--config=hpe_jax/data/config.py', '--num_examples=2',
             '--config.dataset.synthetic.num_train=4',
             '--config.dataset.synthetic.image_size=(64,64)',
             '--config.input.image_size=(32,32)',
             '--config.input.num_threads=1']
  (tmp_path / 'file').write_text('in the way')
  proc = subprocess.run(
      command + [f'--output={tmp_path / "file" / "batch.png"}'], cwd=ROOT,
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1 and 'Traceback' not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      f'hpe_jax.data.show_batch: {tmp_path / "file"}: cannot create the '
      'output folder (a file is in the way)')
  output = tmp_path / 'a' / 'b' / 'batch.png'
  run(*command[2:], f'--output={output}')
  preview = cv2.imread(str(output))
  # Two rows of four 32 x 32 panels, and the part legend under them.
  assert preview.shape[1] == 4 * 34 + 2 and preview.shape[0] > 2 * 34 + 2


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
  assert set(metrics) == {'pck@0.2_torso', 'damaged_examples'} | {
      f'pck@0.2_torso/{j}' for j in skeletons.LSP14.joint_names}
  assert metrics['pck@0.2_torso'] == pytest.approx(np.mean(
      [metrics[f'pck@0.2_torso/{j}'] for j in skeletons.LSP14.joint_names]),
                                                   abs=0.05)
  evals = [l for l in metric_writer.read_metrics(str(tmp_path))
           if 'eval/pck@0.2_torso' in l]
  assert len(evals) == 1 and evals[0]['step'] == 2
