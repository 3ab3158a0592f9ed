"""The skeleton-seeded GrabCut baseline and its evaluation command."""

import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT, make_tiny_config
from hpe_jax.data import skeletons
from hpe_jax.evaluation import grabcut_baseline as gb

LSP_JOINTS = {
    'head_top': (48, 14), 'neck': (48, 24), 'right_shoulder': (42, 28),
    'left_shoulder': (54, 28), 'right_elbow': (40, 40),
    'left_elbow': (56, 40), 'right_wrist': (41, 52), 'left_wrist': (55, 52),
    'right_hip': (44, 58), 'left_hip': (52, 58), 'right_knee': (45, 70),
    'left_knee': (51, 70), 'right_ankle': (46, 80), 'left_ankle': (50, 80)}


def lsp_keypoints(visible=LSP_JOINTS):
  return np.array([LSP_JOINTS[n] + ((2,) if n in visible else (0,))
                   for n in skeletons.LSP14.joint_names], np.float32)


def person_scene():
  """A bright noisy ellipse "person" on dark noise, and its mask."""
  rng = np.random.default_rng(0)
  shape = np.zeros((96, 96), np.uint8)
  cv2.ellipse(shape, (48, 48), (18, 40), 0, 0, 360, 1, -1)
  background = rng.integers(0, 70, (96, 96, 3))
  person = rng.integers(170, 240, (96, 96, 3))
  image = np.where(shape[..., None] == 1, person, background)
  return image.astype(np.uint8), shape


def iou(a, b):
  return (a & b).sum() / (a | b).sum()


def test_grabcut_recovers_the_person_beyond_its_seed():
  image, shape = person_scene()
  kp = lsp_keypoints()
  result = gb.grabcut(image, kp, skeletons.LSP14)
  assert not result.fell_back
  assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 1}
  assert iou(result.mask, shape) > 0.8
  assert iou(result.mask, shape) > iou(result.seed, shape) + 0.15


def test_seed_labels_follow_the_distance_rule():
  kp = np.zeros((14, 3), np.float32)
  neck, head = (skeletons.LSP14.index(n) for n in ('neck', 'head_top'))
  kp[neck], kp[head] = (10, 20, 2), (30, 20, 2)
  labels = gb.seed_labels((40, 40), kp, skeletons.LSP14, fg_thickness=2,
                          bg_distance=8)
  # Distances below the limb along row 20, x = 10..30.
  assert (labels[19:22, 10:31] == cv2.GC_FGD).all()
  assert labels[22, 20] == labels[24, 20] == cv2.GC_PR_FGD
  assert labels[25, 20] == labels[28, 20] == cv2.GC_PR_BGD
  assert labels[29, 20] == cv2.GC_BGD
  # Past an end the joint is nearest: (36, 26) is 8.5 px from (30, 20).
  assert labels[20, 38] == cv2.GC_PR_BGD and labels[20, 39] == cv2.GC_BGD
  assert labels[26, 36] == cv2.GC_BGD and labels[26, 30] == cv2.GC_PR_BGD


def test_default_sizes_scale_with_the_person():
  kp = lsp_keypoints()
  diagonal = math.hypot(56 - 40, 80 - 14)
  assert gb.default_sizes(kp) == pytest.approx(
      (gb.FG_THICKNESS_FRACTION * diagonal,
       gb.BG_DISTANCE_FRACTION * diagonal))
  assert gb.default_sizes(kp * [2, 2, 1]) == pytest.approx(
      tuple(2 * v for v in gb.default_sizes(kp)))
  assert gb.default_sizes(lsp_keypoints(('neck',))) == (1.0, 2.0)


def test_no_labelled_limb_gives_an_empty_mask():
  image, _ = person_scene()
  for visible in ((), ('neck',)):
    result = gb.grabcut(image, lsp_keypoints(visible), skeletons.LSP14)
    assert not result.mask.any() and not result.seed.any()
    assert not result.fell_back


def test_falls_back_to_the_seed_without_background():
  image, _ = person_scene()
  result = gb.grabcut(image, lsp_keypoints(), skeletons.LSP14,
                      bg_distance=200)
  assert result.fell_back
  assert result.seed.all()
  np.testing.assert_array_equal(result.mask, result.seed)


def test_evaluates_at_most_max_examples():
  config = make_tiny_config(**{'input.output_stride': 1,
                               'dataset.synthetic.num_eval': 3})
  everything = gb.evaluate(config)
  count = everything['examples']
  assert count >= 2 and everything['fallbacks'] == 0
  assert 0 < everything['metrics']['mask_iou'] <= 1
  assert gb.evaluate(config, max_examples=count - 1)['examples'] == count - 1


def test_command_writes_named_metrics(tmp_path):
  out = tmp_path / 'metrics.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.evaluation.grabcut_baseline',
       '--config=configs/hourglass.py:smoke',
       '--config.input.output_stride=2', '--config.input.image_size=(64,64)',
       '--config.input.eval_batch_size=4', '--config.input.num_threads=1',
       '--config.dataset.synthetic.num_eval=4',
       '--config.dataset.synthetic.image_size=(64,64)',
       '--max_examples=5', f'--output={out}'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  result = json.loads(out.read_text())
  assert result['examples'] == 5 and result['dataset'] == 'synthetic'
  metrics = result['metrics']
  assert {'mask_iou', 'mask_dice', 'seed/mask_iou', 'seed/mask_dice',
          'pixel_accuracy', 'mask_iou_pooled'} <= set(metrics)
  assert all(math.isfinite(v) for v in metrics.values())
  assert 'seed/mask_iou' in proc.stdout and '5 examples' in proc.stdout
