"""Keypoint tracking MOTA, precision, recall and identity switches in
PoseTrack's convention, on cases counted by hand."""

import numpy as np
import pytest

from hpe_jax.evaluation import tracking_metrics

FramePeople = tracking_metrics.FramePeople


def people(ids, origins, score=1.0, head=10.0):
  """Two-joint people: joints at (x, y) and (x + 10, y) of each origin."""
  kp = np.array([[[x, y, score], [x + 10, y, score]] for x, y in origins],
                np.float64).reshape(-1, 2, 3)
  return FramePeople(np.array(ids), kp, np.full(len(ids), head))


def test_perfect_tracks_score_one():
  gt = [people([1, 2], [(0, 0), (100, 0)])] * 3
  pred = [people([7, 8], [(1, 1), (101, 0)])] * 3
  out = tracking_metrics.keypoint_tracking_metrics(gt, pred)
  assert (out['mota'], out['precision'], out['recall'],
          out['id_switches']) == (1.0, 1.0, 1.0, 0.0)


def test_switches_misses_and_false_positives_counted_by_hand():
  gt = [people([1, 2], [(0, 0), (100, 0)])] * 3
  pred = [
      people([7, 8], [(0, 0), (100, 0)]),
      people([8, 7], [(0, 0), (100, 0)]),  # ids swapped: 2 switches a joint
      people([8, 9], [(0, 0), (300, 0)]),  # B missed, someone who isn't
  ]
  out = tracking_metrics.keypoint_tracking_metrics(gt, pred)
  # Per joint: 6 labelled, FN 1, FP 1, switches 2, TP 5.
  assert out['mota/0'] == out['mota/1'] == pytest.approx(1 - 4 / 6)
  assert out['precision'] == pytest.approx(5 / 6)
  assert out['recall'] == pytest.approx(5 / 6)
  assert out['id_switches'] == 4


def test_threshold_is_half_the_head_size_and_low_scores_are_left_out():
  gt = [people([1], [(0, 0)])]
  near = tracking_metrics.keypoint_tracking_metrics(
      gt, [people([5], [(5, 0)])])
  far = tracking_metrics.keypoint_tracking_metrics(
      gt, [people([5], [(6, 0)])])
  assert near['mota'] == 1.0
  assert far['mota'] == -1.0  # one miss and one false positive per joint
  faint = tracking_metrics.keypoint_tracking_metrics(
      gt, [people([5], [(0, 0)], score=0.1)], min_score=0.2)
  assert faint['mota'] == 0.0 and faint['recall'] == 0.0
  assert np.isnan(faint['precision'])  # nothing predicted
