"""Tests for hpe_jax.evaluation.coco_keypoints on the real COCO fixture."""

import json

import numpy as np
import pytest

from hpe_jax.data import coco
from hpe_jax.data import skeletons
from hpe_jax.evaluation import coco_keypoints as ck
from hpe_jax.tasks import keypoints


@pytest.fixture
def coco_gt_path(shared_data):
  return shared_data / 'fixtures' / 'coco' / 'test_coco.json'


def _gt_people(path):
  """Image ids, [N, 17, 3] keypoints and areas of the labelled people."""
  with open(path, encoding='utf-8') as f:
    anns = [a for a in json.load(f)['annotations'] if a['num_keypoints'] > 0]
  image_ids = np.array([a['image_id'] for a in anns])
  keypoints = np.array([a['keypoints'] for a in anns],
                       dtype=np.float64).reshape(-1, 17, 3)
  return image_ids, keypoints, np.array([a['area'] for a in anns])


def _evaluate_via_file(tmp_path, coco_gt_path, image_ids, keypoints, scores,
                       suffix=''):
  results_path = tmp_path / 'results' / 'keypoints.json'
  coco.write_results(results_path,
                   coco.keypoint_results(image_ids, keypoints, scores))
  return ck.evaluate_keypoints(coco_gt_path, results_path, suffix)


def test_ground_truth_scores_perfectly(tmp_path, coco_gt_path, capsys):
  image_ids, keypoints, _ = _gt_people(coco_gt_path)
  assert len(image_ids) == 12
  suffix = ck.protocol_suffix_for('gt', flip=False)
  metrics = _evaluate_via_file(tmp_path, coco_gt_path, image_ids, keypoints,
                               np.ones(len(image_ids)), suffix)
  assert set(metrics) == {n + '_gtbox' for n in ck.METRIC_NAMES}
  for name, value in metrics.items():
    assert value == 1.0, name
  assert capsys.readouterr().out == ''


def test_results_format(tmp_path):
  results = coco.keypoint_results(np.array([7, 9]), np.ones([2, 17, 3]) * 0.5,
                                np.array([0.9, 0.1], np.float32))
  assert results[0].keys() == {'image_id', 'category_id', 'keypoints', 'score'}
  assert results[1]['image_id'] == 9 and results[1]['category_id'] == 1
  assert len(results[0]['keypoints']) == 51
  coco.write_results(tmp_path / 'r.json', results)
  assert json.loads((tmp_path / 'r.json').read_text()) == results


def test_perturbed_and_misranked_predictions_score_lower(coco_gt_path):
  image_ids, keypoints, areas = _gt_people(coco_gt_path)
  rng = np.random.default_rng(0)
  noisy = keypoints.copy()
  noisy[..., :2] += rng.normal(size=noisy[..., :2].shape) * (
      0.1 * np.sqrt(areas)[:, None, None])
  metrics = ck.evaluate_keypoints(
      coco_gt_path, coco.keypoint_results(image_ids, noisy,
                                        np.ones(len(image_ids))),
      ck.protocol_suffix_for('detected', flip=True))
  assert 0 < metrics['oks_ap_detbox_flip'] < 1
  assert metrics['oks_ap50_detbox_flip'] >= metrics['oks_ap75_detbox_flip']

  # A duplicate pose far from everyone: harmless ranked last, costly first.
  stray = keypoints[:1].copy()
  stray[..., :2] += 1000
  poses = np.concatenate([keypoints, stray])
  ids = np.concatenate([image_ids, image_ids[:1]])
  for stray_score, perfect in ((0.5, True), (2.0, False)):
    scores = np.append(np.ones(len(image_ids)), stray_score)
    ap = ck.evaluate_keypoints(coco_gt_path,
                               coco.keypoint_results(ids, poses, scores))['oks_ap']
    assert (ap == 1.0) == perfect


def test_empty_predictions_score_zero(tmp_path, coco_gt_path):
  suffix = ck.protocol_suffix_for('detected', flip=False)
  assert suffix == '_detbox'
  metrics = ck.evaluate_keypoints(coco_gt_path, [], suffix)
  assert metrics == {n + '_detbox': 0.0 for n in ck.METRIC_NAMES}
  coco.write_results(tmp_path / 'empty.json', [])
  assert ck.evaluate_keypoints(coco_gt_path, tmp_path / 'empty.json') == {
      n: 0.0 for n in ck.METRIC_NAMES}


def test_verbose_prints_summary(coco_gt_path, capsys):
  image_ids, keypoints, _ = _gt_people(coco_gt_path)
  ck.evaluate_keypoints(coco_gt_path, coco.keypoint_results(
      image_ids, keypoints, np.ones(len(image_ids))),
                        sigmas=skeletons.COCO17.oks_sigmas, verbose=True)
  assert 'Average Precision' in capsys.readouterr().out


def test_protocol_suffix():
  assert ck.protocol_suffix_for('gt', flip=True) == '_gtbox_flip'
  with pytest.raises(ValueError, match='boxes'):
    ck.protocol_suffix_for('oracle', flip=False)


def _brute_force_oks_nms(keypoints, scores, areas, sigmas, threshold):
  """Reference OKS-NMS written joint by joint."""
  n, k = keypoints.shape[:2]

  def oks(i, j):
    total = 0.0
    for joint in range(k):
      dx = keypoints[i, joint, 0] - keypoints[j, joint, 0]
      dy = keypoints[i, joint, 1] - keypoints[j, joint, 1]
      variance = (2 * sigmas[joint]) ** 2
      scale = (areas[i] + areas[j]) / 2
      total += np.exp(-(dx * dx + dy * dy) / (2 * scale * variance))
    return total / k

  remaining = sorted(range(n), key=lambda i: -scores[i])
  keep = []
  while remaining:
    best = remaining.pop(0)
    keep.append(best)
    remaining = [j for j in remaining if oks(best, j) <= threshold]
  return keep


def test_oks_nms_matches_brute_force():
  rng = np.random.default_rng(1)
  sigmas = np.asarray(skeletons.COCO17.oks_sigmas)
  base = rng.uniform(0, 200, (6, 17, 3))
  # Jittered copies of the same people make suppressible duplicates.
  keypoints = np.concatenate([base] + [
      base + rng.normal(0, s, base.shape) for s in (1, 4, 10)])
  scores = rng.uniform(size=len(keypoints))
  areas = rng.uniform(1000, 20000, len(keypoints))
  for threshold in (0.3, 0.6, 0.9):
    kept = ck.oks_nms(keypoints, scores, areas, sigmas, threshold)
    expected = _brute_force_oks_nms(keypoints, scores, areas, sigmas,
                                    threshold)
    np.testing.assert_array_equal(kept, expected)
    if threshold == 0.3:
      assert len(kept) < len(keypoints)  # The case does suppress.
  assert ck.oks_nms(np.zeros([0, 17, 3]), [], [], sigmas, 0.5).shape == (0,)


def test_pose_nms_without_sigmas_keeps_separate_people():
  # LSP has no OKS sigmas; NMS must still tell two people from a duplicate.
  def person(image_id, dx, score):
    kp = np.zeros((14, 3))
    kp[:, 0] = np.linspace(0, 40, 14) + dx
    kp[:, 1] = np.linspace(0, 100, 14)
    kp[:, 2] = 1
    return {'image_id': image_id, 'keypoints': kp.ravel().tolist(),
            'score': score}
  results = [person(1, 0, 0.9), person(1, 0.5, 0.8), person(1, 300, 0.7),
             person(2, 0, 0.5)]
  kept = keypoints.pose_nms(results, skeletons.LSP14)
  assert [r['score'] for r in kept] == [0.9, 0.7, 0.5]
