"""Tests of COCO instance metrics, part IoU of matched people and the
COCO-format ground truth they are scored against."""

import json

import numpy as np
from pycocotools import coco as coco_api
from pycocotools import mask as mask_utils
import pytest

from hpe_jax.data import coco
from hpe_jax.data import skeletons
from hpe_jax.data import synthetic
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.evaluation import instance_metrics as im

PARTS = skeletons.BODY_PARTS6.label_names
HEAD, TORSO, LOWER_LEGS = (PARTS.index(n)
                           for n in ('head', 'torso', 'lower_legs'))
IGNORE = skeletons.IGNORE_LABEL


@pytest.fixture(scope='module')
def dataset():
  return synthetic.SyntheticPeople(num_images=3, image_size=(64, 64))


@pytest.fixture(scope='module')
def examples(dataset):
  return [dataset[i] for i in range(len(dataset))]


@pytest.fixture(scope='module')
def coco_gt(dataset):
  return coco.coco_ground_truth(dataset)


def _ground_truth_results(examples, shift=0.0, shrink=1.0):
  """Results that copy the examples' people, boxes optionally moved."""
  image_ids, boxes, masks, keypoints = [], [], [], []
  for ex in examples:
    for p in range(len(ex['boxes'])):
      image_ids.append(ex['image_id'])
      x1, y1, x2, y2 = ex['boxes'][p]
      w, h = (x2 - x1) * shrink, (y2 - y1) * shrink
      boxes.append([x1 + shift, y1 + shift, x1 + shift + w, y1 + shift + h])
      masks.append(ex['person_masks'][p].astype(bool))
      keypoints.append(ex['keypoints'][p])
  return coco.instance_results(image_ids, boxes, np.ones(len(image_ids)),
                             masks, np.array(keypoints))


def test_ground_truth_from_examples(examples, coco_gt, capsys):
  people = sum(len(ex['boxes']) for ex in examples)
  assert people > len(examples)
  anns = [a for a in coco_gt.dataset['annotations'] if not a['iscrowd']]
  assert len(anns) == people
  assert coco_gt.getCatIds() == [1]
  for ex in examples:
    ann_ids = coco_gt.getAnnIds(imgIds=[ex['image_id']])
    assert coco_gt.imgs[ex['image_id']]['height'] == 64
    decoded = np.stack([mask_utils.decode(coco_gt.anns[i]['segmentation'])
                        for i in ann_ids])
    np.testing.assert_array_equal(decoded, ex['person_masks'])
    kp = np.array([coco_gt.anns[i]['keypoints'] for i in ann_ids])
    np.testing.assert_allclose(kp.reshape(ex['keypoints'].shape),
                               ex['keypoints'])
  assert capsys.readouterr().out == ''


def test_ground_truth_needs_masks_or_coco():
  class NoMasks:
    name = 'lsp'
    has_masks = False

  with pytest.raises(ValueError, match='lsp'):
    coco.coco_ground_truth(NoMasks())

  class Reader:
    coco = coco_api.COCO()

  assert coco.coco_ground_truth(Reader()) is Reader.coco


def test_annotation_entries_of_crowds_and_other_skeletons():
  mask = np.zeros((2, 6, 5), np.uint8)
  mask[0, 1:3, 1:4] = 1
  mask[1, 4:, :] = 1
  ex = dict(image_id=4, height=6, width=5, person_masks=mask,
            keypoints=np.array([[[1, 1, 2], [2, 2, 1], [0, 0, 0]],
                                [[3, 4, 2], [1, 5, 2], [2, 5, 2]]],
                               np.float32),
            boxes=np.array([[1, 1, 4, 3], [0, 4, 5, 6]], np.float32),
            is_crowd=np.array([False, True]))
  person, crowd = coco.coco_annotation_entries(ex, 10)
  assert (person['id'], crowd['id']) == (10, 11)
  assert (person['iscrowd'], crowd['iscrowd']) == (0, 1)
  assert person['num_keypoints'] == 2 and crowd['num_keypoints'] == 0
  assert person['keypoints'] == [1.0, 1.0, 2, 2.0, 2.0, 1, 0.0, 0.0, 0]
  assert crowd['keypoints'] == [0] * 9
  assert person['bbox'] == [1.0, 1.0, 3.0, 2.0] and person['area'] == 6
  assert crowd['area'] == 10
  json.dumps([person, crowd])  # Plain Python values only.


def test_results_format():
  masks = [np.ones((4, 6), bool), np.zeros((8, 3), np.uint8)]
  results = coco.instance_results([1, 2], [[1, 2, 4, 7], [0, 0, 1, 1]],
                                [0.5, 0.25], masks, np.ones((2, 17, 3)))
  assert results[0].keys() == {'image_id', 'category_id', 'score', 'bbox',
                               'segmentation', 'keypoints'}
  assert results[0]['bbox'] == [1, 2, 3, 5]
  assert results[1]['image_id'] == 2 and results[1]['score'] == 0.25
  assert results[1]['segmentation']['size'] == [8, 3]
  np.testing.assert_array_equal(
      mask_utils.decode(results[0]['segmentation']), masks[0])
  assert len(results[0]['keypoints']) == 51
  assert json.loads(json.dumps(results)) == results
  bare = coco.instance_results([1], [[0, 0, 2, 2]], [1.0])
  assert bare[0].keys() == {'image_id', 'category_id', 'score', 'bbox'}
  with pytest.raises(ValueError):
    coco.instance_results([1, 2], [[0, 0, 2, 2]], [1.0, 1.0])


def test_ground_truth_predictions_score_one(examples, coco_gt, capsys):
  results = _ground_truth_results(examples)
  boxes = im.evaluate_instances(coco_gt, results, 'bbox', '_detbox')
  masks = im.evaluate_instances(coco_gt, results, 'segm')
  assert list(boxes) == [f'box_{n}_detbox' for n in im.STAT_NAMES]
  assert list(masks) == [f'mask_{n}' for n in im.STAT_NAMES]
  assert boxes['box_ap_detbox'] == pytest.approx(1, abs=1e-6)
  assert boxes['box_ar100_detbox'] == pytest.approx(1, abs=1e-6)
  assert masks['mask_ap'] == pytest.approx(1, abs=1e-6)
  # People without a labelled joint are not keypoint ground truth.
  labelled = [r for r in results if np.any(np.array(r['keypoints'][2::3]))]
  oks = coco_keypoints.evaluate_keypoints(coco_gt, labelled)
  assert oks['oks_ap'] == pytest.approx(1, abs=1e-6)
  assert capsys.readouterr().out == ''


def test_worse_boxes_score_lower_and_nothing_scores_zero(examples, coco_gt):
  moved = _ground_truth_results(examples, shift=3.0, shrink=0.8)
  ap = im.evaluate_instances(coco_gt, moved, 'bbox')['box_ap']
  assert 0 < ap < 1
  for iou_type in ('bbox', 'segm'):
    empty = im.evaluate_instances(coco_gt, [], iou_type)
    assert len(empty) == 12 and set(empty.values()) == {0.0}


def test_each_iou_type_scores_its_own_key(examples, coco_gt):
  results = _ground_truth_results(examples)
  # The same masks with wrong boxes: a mask score must not see the boxes,
  # nor a box score the masks.
  bad_boxes = [dict(r, bbox=[0.0, 0.0, 1.0, 1.0]) for r in results]
  masks = im.evaluate_instances(coco_gt, bad_boxes, 'segm')
  assert masks['mask_ap'] == pytest.approx(1, abs=1e-6)
  assert im.evaluate_instances(coco_gt, bad_boxes, 'bbox')['box_ap'] == 0
  box_only = [{k: v for k, v in r.items() if k != 'segmentation'}
              for r in results]
  assert (im.evaluate_instances(coco_gt, results, 'bbox') ==
          im.evaluate_instances(coco_gt, box_only, 'bbox'))
  assert 'area' not in results[0]  # The caller's dicts are left alone.
  with pytest.raises(ValueError, match='segmentation'):
    im.evaluate_instances(coco_gt, box_only, 'segm')
  with pytest.raises(ValueError, match='iou_type'):
    im.evaluate_instances(coco_gt, results, 'keypoints')


def test_box_iou():
  a = np.array([[0, 0, 2, 2], [1, 1, 1, 3]], np.float32)
  b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [0, 0, 4, 1], [5, 5, 6, 6]])
  expected = np.array([[1 / 7, 1, 2 / 6, 0], [0, 0, 0, 0]])
  np.testing.assert_allclose(im.box_iou(a, b), expected)
  assert im.box_iou(np.zeros((0, 4)), b).shape == (0, 4)
  assert im.box_iou(a, np.zeros((0, 4))).shape == (2, 0)


def _two_people():
  """An 8x8 image: people 0 (columns 0-3) and 1 (columns 5-7), and two
  detections: 0 matches person 0, 1 overlaps person 1 too little."""
  gt_instances = np.zeros((8, 8), np.uint8)
  gt_parts = np.zeros((8, 8), np.uint8)
  gt_instances[:, :4] = 1
  gt_parts[0:2, :4] = HEAD
  gt_parts[2:5, :4] = TORSO
  gt_parts[5:8, :4] = LOWER_LEGS
  gt_instances[:, 5:] = 2
  gt_parts[:, 5:] = TORSO
  gt_instances[7, 4] = IGNORE  # Unknown, next to person 0.
  gt_parts[0, 0] = IGNORE  # Person 0 without a part label.
  pred_instances = np.zeros((8, 8), np.int32)
  pred_parts = np.zeros((8, 8), np.int32)
  pred_instances[:, :5] = 1  # Detection 0, one column too wide.
  pred_parts[0:3, :5] = HEAD
  pred_parts[3:5, :5] = TORSO
  pred_parts[5:8, :5] = LOWER_LEGS
  pred_instances[0:2, 5:] = 2  # Detection 1, box IoU 1/4 with person 1.
  pred_parts[0:2, 5:] = HEAD
  return dict(
      pred_boxes=np.array([[0, 0, 5, 8], [5, 0, 8, 2]], np.float32),
      pred_scores=np.array([0.9, 0.8]), pred_valid=np.array([True, True]),
      pred_instances=pred_instances, pred_parts=pred_parts,
      gt_boxes=np.array([[0, 0, 4, 8], [5, 0, 8, 8]], np.float32),
      gt_valid=np.array([True, True]), gt_instances=gt_instances,
      gt_parts=gt_parts)


def _metrics(*images, **kwargs):
  metric = im.MatchedPartIoU(PARTS, **kwargs)
  for image in images:
    metric.add(**image)
  return metric.compute()


def test_matched_part_iou_by_hand():
  m = _metrics(_two_people())
  # Scored: columns 0-4 (both masks of the pair) less (0, 0) and (7, 4).
  # Head: truth rows 0-1 x cols 0-3 = 7 px, prediction rows 0-2 x cols 0-4
  # = 14 px, all of the truth inside: 7 / 14.
  # Torso: truth rows 2-4 x cols 0-3 = 12, prediction rows 3-4 x cols 0-4
  # = 10, overlap rows 3-4 x cols 0-3 = 8: 8 / (12 + 10 - 8).
  # Lower legs: truth rows 5-7 x cols 0-3 = 12, prediction rows 5-7 x cols
  # 0-4 less (7, 4) = 14, all of the truth inside: 12 / 14.
  head, torso, legs = 7 / 14, 8 / 14, 12 / 14
  assert m['part_iou_matched/head'] == pytest.approx(head)
  assert m['part_iou_matched/torso'] == pytest.approx(torso)
  assert m['part_iou_matched/lower_legs'] == pytest.approx(legs)
  for name in ('upper_arms', 'lower_arms', 'upper_legs'):
    assert np.isnan(m[f'part_iou_matched/{name}'])
  assert 'part_iou_matched/background' not in m
  assert m['part_miou_matched'] == pytest.approx((head + torso + legs) / 3)
  assert (m['matched_people'], m['gt_people']) == (1, 2)
  assert m['matched_fraction'] == 0.5


def test_matched_part_iou_of_perfect_predictions():
  image = _two_people()
  gt = image['gt_instances']
  image.update(pred_boxes=image['gt_boxes'], pred_scores=np.array([1, 1]),
               pred_instances=np.where(gt == IGNORE, 0, gt),
               pred_parts=np.where(image['gt_parts'] == IGNORE, HEAD,
                                   image['gt_parts']))
  m = _metrics(image, image)
  assert m['part_miou_matched'] == 1
  assert m['matched_fraction'] == 1 and m['matched_people'] == 4


def test_unknown_pixels_and_unmatched_detections_are_not_scored():
  reference = _metrics(_two_people())
  changed = _two_people()
  changed['pred_parts'][0, 0] = TORSO
  changed['pred_parts'][7, 4] = 0
  changed['pred_instances'][7, 4] = 0
  assert _metrics(changed) == pytest.approx(reference, nan_ok=True)
  for drop in ('valid', 'pixels'):
    unmatched = _two_people()
    if drop == 'valid':
      unmatched['pred_valid'] = np.array([True, False])
    else:
      unmatched['pred_instances'][unmatched['pred_instances'] == 2] = 0
    assert _metrics(unmatched) == pytest.approx(reference, nan_ok=True)


def test_matching_is_greedy_by_score_and_thresholded():
  image = _two_people()
  # Detection 1 now covers person 0 exactly and scores higher, so it takes
  # person 0 and detection 0 (box IoU 0.8 with person 0) is left unmatched.
  image['pred_boxes'][1] = image['gt_boxes'][0]
  image['pred_scores'] = np.array([0.5, 0.9])
  pairs = im.match_detections(image['pred_boxes'], image['pred_scores'],
                              image['gt_boxes'])
  assert pairs == [(1, 0)]
  assert _metrics(image)['matched_people'] == 1
  # Detection 1's pixels (rows 0-1, columns 5-7) are head against person
  # 0's pixels, which it misses entirely.
  assert _metrics(image)['part_iou_matched/head'] == 0
  strict = _metrics(_two_people(), iou_threshold=0.9)
  assert strict['matched_people'] == 0
  assert np.isnan(strict['part_miou_matched'])
  assert np.isnan(_metrics()['matched_fraction'])
