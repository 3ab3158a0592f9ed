"""The dense CRF's hyperparameter search: its score against
`SegmentationMetrics`, a planted optimum, and the command on a tiny
pose_mask run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax import tasks
from hpe_jax.evaluation import refine_search
from hpe_jax.evaluation import segmentation_metrics
from hpe_jax.refinement import dense_crf
from hpe_jax.training import trainer
from conftest import make_tiny_config
from conftest import override
from conftest import ROOT
from conftest import tiny_model_config


def test_mean_mask_iou_is_segmentation_metrics_mask_iou():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, (7, 12, 10)).astype(np.uint8)
  masks = rng.integers(0, 2, (7, 12, 10)).astype(np.uint8)
  masks[rng.random(masks.shape) < 0.2] = 255
  masks[1] = 255  # nothing scored: skipped
  masks[2] = np.where(masks[2] == 255, 255, 0)  # both empty: IoU 1
  labels[2] = 0
  masks[3] = np.where(masks[3] == 255, 255, 0)  # empty truth: IoU 0
  labels[4] = 0  # empty prediction
  metrics = segmentation_metrics.SegmentationMetrics(2)
  metrics.add(labels, masks)
  expected = metrics.compute()['mask_iou']
  counts = np.asarray(refine_search.mask_counts(labels, masks))
  assert counts.shape == (7, 4)
  assert refine_search.mean_mask_iou(counts) == pytest.approx(expected,
                                                              abs=1e-12)
  # Over a leading axis of settings, each row on its own.
  both = np.asarray(refine_search.mask_counts(
      np.stack([labels, 1 - labels]), masks))
  flipped = segmentation_metrics.SegmentationMetrics(2)
  flipped.add(1 - labels, masks)
  np.testing.assert_allclose(refine_search.mean_mask_iou(both),
                             [expected, flipped.compute()['mask_iou']],
                             atol=1e-12)


def planted(n=5, size=24, seed=0):
  """Person = the right half and a two-pixel arm reaching left; the
  network is right 0.8 of the time, wrong on 10% of pixels at random; the
  image is flat grey (no colour cue). Too little smoothing leaves the
  wrong pixels, too much erases the arm (see the test)."""
  rng = np.random.default_rng(seed)
  probs, masks = [], []
  for _ in range(n):
    truth = np.zeros((size, size), np.uint8)
    truth[:, size // 2:] = 1
    row = rng.integers(3, size - 5)
    truth[row:row + 2, 2:size // 2] = 1
    person = np.where(truth == 1, 0.8, 0.2)
    person = np.where(rng.random((size, size)) < 0.1, 1 - person, person)
    probs.append(np.stack([1 - person, person], -1))
    truth[0] = 255  # an unknown row
    masks.append(truth)
  return refine_search.Collected(
      np.asarray(probs, np.float32),
      np.full((n, size, size, 3), 128, np.uint8), np.stack(masks))


# Only the spatial weight varies; the bilateral term is negligible.
PLANTED_AXES = dict(spatial_weight=(0.06, 6.0), spatial_sigma=(1.0, 1.0),
                    bilateral_weight=(1e-3, 1e-3),
                    bilateral_sigma_xy=(2.0, 2.0),
                    bilateral_sigma_rgb=(10.0, 10.0))


def brute_force_iou(data, params, window, iterations):
  """mask_iou of `params` by refining image by image."""
  metrics = segmentation_metrics.SegmentationMetrics(2)
  for i in range(len(data)):
    labels = dense_crf.refine(data.probs[i:i + 1], data.images[i:i + 1],
                              params, window=window, iterations=iterations)
    metrics.add(np.asarray(labels), data.masks[i:i + 1])
  return metrics.compute()['mask_iou']


def test_search_finds_the_planted_optimum():
  data = planted()
  lines = []
  # A budget of two settings x images per call: chunked and padded.
  result = refine_search.search(data, window=5, iterations=5, rounds=3,
                                axes=PLANTED_AXES, memory_budget=300_000,
                                log=lines.append)
  assert refine_search.chunk_sizes(3, data, 5, 300_000) == (1, 2)
  assert len(lines) == 3 and lines[0].startswith('round 1: 3 settings')
  assert result.best.spatial_weight == pytest.approx(0.6)
  assert result.best._replace(spatial_weight=0.6) == dense_crf.CrfParams(
      0.6, 1.0, 1e-3, 2.0, 10.0)
  # The scores of the coarse round, refined image by image.
  coarse = {w: brute_force_iou(data, dense_crf.CrfParams(w, 1.0, 1e-3, 2.0,
                                                         10.0), 5, 5)
            for w in (0.06, 0.6, 6.0)}
  # When written: 0.06 -> 0.81 (the wrong pixels stay), 0.6 -> 0.96,
  # 6 -> 0.93 (the arm is gone).
  assert coarse[0.6] > max(coarse[0.06], coarse[6.0]) + 0.02, coarse
  assert result.rounds[0]['mask_iou'] == pytest.approx(coarse[0.6],
                                                       abs=1e-12)
  assert result.mask_iou == pytest.approx(
      brute_force_iou(data, result.best, 5, 5), abs=1e-12)
  labels = np.argmax(data.probs, -1)
  unrefined = segmentation_metrics.SegmentationMetrics(2)
  unrefined.add(labels, data.masks)
  assert result.unrefined == pytest.approx(
      unrefined.compute()['mask_iou'], abs=1e-12)
  # Finer rounds: 0.6 times 10^(+-1/2), then 10^(+-1/4); never worse.
  assert [r['settings'] for r in result.rounds] == [3, 2, 2]
  ious = [r['mask_iou'] for r in result.rounds]
  assert ious == sorted(ious)


def test_score_params_matches_refining_each_setting_alone():
  data = planted(n=3, size=16, seed=1)
  grid = [dense_crf.DEFAULT, dense_crf.CrfParams(1.0, 1.5, 0.2, 2.0, 30.0),
          dense_crf.CrfParams(0.1, 0.7, 0.05, 1.0, 5.0)]
  scores = refine_search.score_params(data, grid, window=3, iterations=3,
                                      memory_budget=50_000)
  np.testing.assert_allclose(
      scores, [brute_force_iou(data, p, 3, 3) for p in grid], atol=1e-12)


def test_only_person_mask_runs_are_searched():
  task = tasks.make(make_tiny_config())
  with pytest.raises(errors.ConfigError, match='person masks'):
    refine_search.probability_function(task, None, None, False)


@pytest.fixture(scope='module')
def pose_mask_run(tmp_path_factory):
  """A tiny pose_mask run (4 steps) and its final metrics."""
  workdir = tmp_path_factory.mktemp('pose_mask_crf')
  config = override(tiny_model_config('pose_mask'), {
      'total_steps': 4, 'log_every': 2, 'checkpoint_every': 0,
      'eval_every': 0, 'eval_at_start': False, 'input.batch_size': 4,
      'input.eval_batch_size': 4})
  metrics = trainer.train_and_evaluate(config, str(workdir))
  return workdir, metrics


def test_command_writes_the_search_result(pose_mask_run):
  workdir, metrics = pose_mask_run
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.evaluation.refine_search',
       f'--workdir={workdir}', '--window=5', '--iterations=2',
       '--rounds=2'], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert 'round 1: 243 settings' in proc.stdout
  assert 'round 2:' in proc.stdout and 'ms per image' in proc.stdout
  saved = json.loads((workdir / 'refine_search.json').read_text())
  assert {'crf', 'window', 'iterations', 'mask_iou', 'examples',
          'seconds_per_image'} <= set(saved)
  assert saved['window'] == 5 and saved['iterations'] == 2
  assert set(saved['crf']) == set(dense_crf.CrfParams._fields)
  assert all(v > 0 for v in saved['crf'].values())
  # The unrefined masks are the evaluator's: the same mask_iou.
  assert saved['mask_iou']['unrefined'] == pytest.approx(
      metrics['mask_iou'], abs=1e-9)
  assert 0 <= saved['mask_iou']['refined'] <= 1
  assert saved['mask_iou']['refined'] == saved['rounds'][-1]['mask_iou']
  assert saved['examples'] >= 4 and 0 < saved['seconds_per_image'] < 1
  assert dense_crf.load_params(str(workdir)) == dense_crf.CrfParams(
      **saved['crf'])


def test_command_rejects_an_even_window(pose_mask_run):
  workdir, _ = pose_mask_run
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.evaluation.refine_search',
       f'--workdir={workdir}', '--window=4'], cwd=ROOT, capture_output=True,
      text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      'hpe_jax.evaluation.refine_search: --window=4: must be odd and at '
      'least 3')
