"""Tests for hpe_jax.evaluation.pck on hand-computed cases and real LSP labels."""

import math

import numpy as np
import pytest
import scipy.io

from hpe_jax.data import skeletons
from hpe_jax.evaluation import pck


def _hand_case():
  """Two people x three joints with 3-4-5 offsets, normalisers 10 and 20.

  At alpha 0.5 the thresholds are 5 px and 10 px; the errors are
  person 0: 5 (on the threshold, correct), 0 (correct), 10 (wrong);
  person 1: 10 (correct), 15 (wrong), 5 (correct).
  """
  gt = np.zeros([2, 3, 2])
  pred = gt + np.array([[[3, 4], [0, 0], [6, 8]],
                        [[-6, 8], [9, -12], [0, 5]]], np.float64)
  return pred, gt, np.ones([2, 3], bool), np.array([10.0, 20.0])


def test_pck_hand_computed():
  result = pck.pck_accuracy(*_hand_case(), alpha=0.5)
  np.testing.assert_allclose(result.per_joint, [1.0, 0.5, 0.5])
  np.testing.assert_array_equal(result.per_joint_count, [2, 2, 2])
  assert result.mean == pytest.approx(4 / 6)
  assert result.count == 6


def test_pck_exclusions():
  pred, gt, visible, norm = _hand_case()
  visible[0, 1] = False  # A correct joint stops counting.
  visible[1, 2] = False  # So does a correct one of person 1.
  result = pck.pck_accuracy(pred, gt, visible, norm, alpha=0.5)
  np.testing.assert_allclose(result.per_joint, [1.0, 0.0, 0.0])
  assert (result.mean, result.count) == (pytest.approx(2 / 4), 4)

  for bad in (0.0, -1.0, np.nan, np.inf):
    result = pck.pck_accuracy(pred, gt, np.ones([2, 3], bool),
                              np.array([10.0, bad]), alpha=0.5)
    np.testing.assert_allclose(result.per_joint, [1.0, 1.0, 0.0])
    assert result.count == 3

  none = pck.pck_accuracy(pred, gt, np.zeros([2, 3], bool), norm, alpha=0.5)
  assert none.count == 0 and math.isnan(none.mean)
  assert np.isnan(none.per_joint).all()


def test_nan_prediction_is_a_miss_and_nan_gt_is_excluded():
  pred, gt, visible, norm = _hand_case()
  pred[0, 0] = np.nan
  gt[1, 1] = np.nan
  result = pck.pck_accuracy(pred, gt, visible, norm, alpha=0.5)
  np.testing.assert_allclose(result.per_joint, [0.5, 1.0, 0.5])
  assert result.count == 5


def test_normalisers():
  kp = np.zeros([3, 14, 3])
  ls, rh = skeletons.LSP14.index('left_shoulder'), skeletons.LSP14.index(
      'right_hip')
  kp[:, ls] = [10, 10, 2]
  kp[:, rh] = [40, 50, 1]  # Hidden but labelled still counts.
  kp[1, rh, 2] = 0
  kp[2, ls, 2] = 0
  np.testing.assert_allclose(pck.torso_size(kp, skeletons.LSP14),
                             [50, np.nan, np.nan])
  with pytest.raises(ValueError, match='torso'):
    pck.torso_size(kp, skeletons.Skeleton('x', ('a',), (), torso=None))

  boxes = np.array([[0, 0, 30, 40], [10, 20, 110, 70]], np.float64)
  np.testing.assert_allclose(pck.bbox_size(boxes), [40, 100])
  np.testing.assert_allclose(pck.head_size(boxes), [0.6 * 50, 0.6 * np.hypot(
      100, 50)])
  np.testing.assert_allclose(pck.head_size(np.full([1, 4], np.nan)), np.nan)


def test_auc_and_epe():
  gt = np.zeros([1, 3, 2])
  pred = np.array([[[0, 0], [1, 0], [0, 3]]], np.float64)
  norm = np.array([10.0])  # Normalised errors 0, 0.1, 0.3.
  visible = np.ones([1, 3], bool)
  # Shares of the area up to alpha 0.2: 1, 0.5, 0.
  assert pck.pck_auc(pred, gt, visible, norm, alpha_max=0.2) == (
      pytest.approx(0.5))
  alphas = np.linspace(0, 0.2, 2001)
  curve = [pck.pck_accuracy(pred, gt, visible, norm, a).mean for a in alphas]
  assert pck.pck_auc(pred, gt, visible, norm, 0.2) == pytest.approx(
      np.trapezoid(curve, alphas) / 0.2, abs=1e-3)
  assert pck.end_point_error(pred, gt, visible) == pytest.approx(4 / 3)
  visible[0, 2] = False
  assert pck.end_point_error(pred, gt, visible) == pytest.approx(0.5)


def test_metric_names_carry_the_protocol():
  assert pck.metric_name(0.2, 'torso') == 'pck@0.2_torso'
  assert pck.metric_name(0.2, 'bbox') == 'pck@0.2_bbox'
  assert pck.metric_name(0.5, 'head') == 'pckh@0.5'
  pred, gt, visible, norm = _hand_case()
  metrics = pck.pck_metrics(pred, gt, visible, norm, alpha=0.5,
                            normalizer_name='head',
                            joint_names=('a', 'b', 'c'), auc_alpha_max=0.5)
  assert set(metrics) == {'pckh@0.5', 'pckh@0.5/a', 'pckh@0.5/b',
                          'pckh@0.5/c', 'pck_auc@0.5_head', 'epe'}
  assert metrics['pckh@0.5'] == pytest.approx(4 / 6)
  assert metrics['pckh@0.5/b'] == pytest.approx(0.5)
  with pytest.raises(ValueError, match='joint names'):
    pck.pck_metrics(pred, gt, visible, norm, alpha=0.5, normalizer_name='bbox',
                    joint_names=('a',))


def test_lsp_ground_truth_and_quarter_torso_shift(shared_data):
  joints = scipy.io.loadmat(shared_data / 'lsp' / 'joints.mat')['joints']
  xy = joints[:2].transpose(2, 1, 0)  # [N, 14, 2]
  visible = joints[2].T == 0  # The LSP flag marks occluded joints.
  # Every LSP joint is labelled; occluded ones are hidden (1), others 2.
  gt = np.concatenate([xy, np.where(visible, 2.0, 1.0)[..., None]], -1)
  torso = pck.torso_size(gt, skeletons.LSP14)
  assert np.all(torso > 0)

  exact = pck.pck_accuracy(xy, xy, visible, torso, alpha=0.2)
  assert exact.mean == 1.0 and exact.count == visible.sum()
  np.testing.assert_array_equal(exact.per_joint, 1.0)

  angle = np.random.default_rng(0).uniform(0, 2 * np.pi, visible.shape)
  direction = np.stack([np.cos(angle), np.sin(angle)], -1)
  shifted = xy + 0.25 * torso[:, None, None] * direction
  metrics = pck.pck_metrics(shifted, xy, visible, torso, alpha=0.2,
                            normalizer_name='torso',
                            joint_names=skeletons.LSP14.joint_names)
  assert metrics['pck@0.2_torso'] == 0.0
  assert metrics['pck@0.2_torso/right_ankle'] == 0.0
  assert pck.pck_accuracy(shifted, xy, visible, torso, 0.3).mean == 1.0
  assert pck.pck_auc(shifted, xy, visible, torso, 0.5) == pytest.approx(0.5)
