"""Tests of the COCO keypoints reader and the detection-file reader."""

import contextlib
import io
import json

import cv2
import numpy as np
import pytest
from pycocotools import cocoeval
from pycocotools import mask as mask_utils

from hpe_jax.data import coco
from hpe_jax.data import datasets
from hpe_jax.data import example
from hpe_jax.data import skeletons


def _keypoints(num_labelled, x0=5):
  kp = np.zeros((17, 3))
  j = np.arange(num_labelled)
  kp[j] = np.stack([x0 + j, 8 + j, np.full_like(j, 2)], -1)
  return kp.ravel().tolist()


def _uncompressed_rle(mask):
  """COCO's uncompressed RLE: column-major run lengths, zeros first."""
  flat = mask.ravel(order='F')
  edges = np.flatnonzero(np.diff(flat)) + 1
  runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
  return {'counts': ([0] if flat[0] else []) + runs, 'size': list(mask.shape)}


def _disc(shape, centre, radius):
  yy, xx = np.mgrid[:shape[0], :shape[1]]
  return ((yy - centre[0])**2 + (xx - centre[1])**2 <= radius**2).astype(
      np.uint8)


def _person(ann_id, image_id, segmentation, bbox, keypoints, crowd=0):
  return dict(id=ann_id, image_id=image_id, category_id=1, iscrowd=crowd,
              segmentation=segmentation, bbox=bbox, keypoints=keypoints,
              num_keypoints=int(np.count_nonzero(keypoints[2::3])),
              area=float(bbox[2] * bbox[3]))


class _Folder:
  """A tiny COCO folder like the synthetic exporter's, written by the test.

  Image 7 (40x60) holds a polygon person, an RLE person without labelled
  keypoints and an uncompressed-RLE crowd region; image 3 (30x20) holds an
  mmpose-style stringified person and a crowd region.
  """

  def __init__(self, root):
    self.root = root
    (root / 'images').mkdir()
    (root / 'parts').mkdir()
    self.disc = _disc((40, 60), (20, 40), 8)
    self.crowd = np.zeros((40, 60), np.uint8)
    self.crowd[30:38, 2:20] = 1
    rle = mask_utils.encode(np.asfortranarray(self.disc))
    rle['counts'] = rle['counts'].decode('ascii')
    self.small = np.zeros((30, 20), np.uint8)
    self.small[5:9, 4:10] = 1
    small_rle = mask_utils.encode(np.asfortranarray(self.small))
    small_rle['counts'] = small_rle['counts'].decode('ascii')
    self.annotations = [
        _person(10, 7, [[10, 10, 30, 10, 30, 25, 10, 25]], [10, 10, 20, 15],
                _keypoints(5)),
        _person(11, 7, rle, [32, 12, 17, 17], _keypoints(0)),
        _person(12, 7, _uncompressed_rle(self.crowd), [2, 30, 18, 8],
                _keypoints(0), crowd=1),
        {k: str(v) for k, v in _person(
            20, 3, small_rle, [4, 5, 6, 4], _keypoints(3, x0=4)).items()},
        _person(21, 3, [[0, 20, 5, 20, 5, 25]], [0, 20, 5, 5], _keypoints(0),
                crowd=1),
    ]
    self.images = [
        dict(id=7, file_name='seven.jpg', height=40, width=60),
        dict(id=3, file_name='three.jpg', height=30, width=20)]
    self.part_maps = {}
    for image in self.images:
      shape = (image['height'], image['width'])
      cv2.imwrite(str(root / 'images' / image['file_name']),
                  np.full(shape + (3,), image['id'] * 20, np.uint8))
      parts = np.zeros(shape, np.uint8)
      parts[2:6, 3:7] = 2
      parts[7, 1] = 255
      self.part_maps[image['id']] = parts
      cv2.imwrite(str(root / 'parts' / image['file_name'].replace(
          '.jpg', '.png')), parts)
    self.write()

  def write(self, extra_annotations=(), extra_images=()):
    data = dict(
        images=self.images + list(extra_images),
        annotations=self.annotations + list(extra_annotations),
        categories=[dict(id=1, name='person')])
    path = self.root / 'annotations.json'
    path.write_text(json.dumps(data))
    return str(path)

  def dataset(self, annotation_file=None, **kwargs):
    return coco.CocoKeypoints(
        annotation_file or str(self.root / 'annotations.json'),
        str(self.root / 'images'), parts_dir=str(self.root / 'parts'),
        **kwargs)


@pytest.fixture
def folder(tmp_path):
  return _Folder(tmp_path)


# --- synthetic files ---------------------------------------------------------


def test_synthetic_folder_people_masks_and_parts(folder):
  ds = folder.dataset()
  assert ds.num_skipped == 0 and ds.part_schema is skeletons.BODY_PARTS6
  assert ds.image_ids == [3, 7]  # Sorted by image id.
  ex = ds[1]
  assert ex['image_id'] == 7 and (ex['height'], ex['width']) == (40, 60)
  assert ex['image_path'].endswith('seven.jpg')
  np.testing.assert_array_equal(ex['is_crowd'], [False, False, True])
  np.testing.assert_array_equal(
      ex['boxes'], [[10, 10, 30, 25], [32, 12, 49, 29], [2, 30, 20, 38]])
  np.testing.assert_array_equal(ex['keypoints'][0].ravel(), _keypoints(5))
  assert np.isnan(ex['head_boxes']).all()
  masks = ex['person_masks']
  assert masks.shape == (3, 40, 60) and masks.dtype == np.uint8
  np.testing.assert_array_equal(masks[1], folder.disc)  # Compressed RLE.
  np.testing.assert_array_equal(masks[2], folder.crowd)  # Uncompressed RLE.
  # The polygon's corners are pixel edges, like its bbox.
  assert int(masks[0].sum()) == 20 * 15
  np.testing.assert_array_equal(example.boxes_from_masks(masks[:1]),
                                ex['boxes'][:1])
  np.testing.assert_array_equal(ex['part_map'], folder.part_maps[7])


def test_stringified_mmpose_fields_are_parsed(folder):
  ex = folder.dataset()[0]
  assert ex['image_id'] == 3
  np.testing.assert_array_equal(ex['boxes'][0], [4, 5, 10, 9])
  np.testing.assert_array_equal(ex['keypoints'][0].ravel(),
                                _keypoints(3, x0=4))
  np.testing.assert_array_equal(ex['person_masks'][0], folder.small)


def test_min_keypoints_keeps_crowds_and_skip_empty_images(folder):
  ds = folder.dataset(min_keypoints=1)
  assert [len(ds.annotation(i)['boxes']) for i in range(2)] == [2, 2]
  np.testing.assert_array_equal(ds.annotation(1)['is_crowd'], [False, True])
  # Leaving people out of examples does not remove them from evaluation.
  assert sorted(ds.coco.anns) == [10, 11, 12, 20, 21]
  ds = folder.dataset(min_keypoints=4, skip_empty_images=True)
  assert ds.image_ids == [7]  # Image 3 keeps only its crowd region.


def test_malformed_entries_are_skipped_counted_and_logged(folder, caplog):
  good = folder.annotations[0]
  nan_keypoints = _keypoints(5)
  nan_keypoints[3] = float('nan')
  bad = [
      dict(good, id=101, keypoints=_keypoints(5)[:-3]),  # 16 joints.
      dict(good, id=102, keypoints=nan_keypoints),
      dict(good, id=103, bbox=[10, 10, -4, 15]),
      dict(good, id=104, segmentation=[[1, 2, 3, 4]]),
      dict(good, id=105, segmentation={'counts': 'abc', 'size': [5, 5]}),
      # Undecodable RLE of the right size; '0' decodes to garbage silently.
      dict(good, id=109, segmentation={'counts': 'abc', 'size': [40, 60]}),
      dict(good, id=110, segmentation={'counts': '0', 'size': [40, 60]}),
      dict(good, id=106, image_id=99),
      dict(good, id=10),  # Duplicate id.
      dict(good, id=107, keypoints='[1, 2,'),  # Broken literal.
      dict(good, id=108, category_id=2),  # Another category: ignored.
  ]
  path = folder.write(bad, [dict(id=8, file_name='x.jpg', height=0,
                                 width=5)])
  ds = folder.dataset(path)
  assert ds.num_skipped == 11  # 10 annotations + 1 image.
  assert sorted(ds.coco.anns) == [10, 11, 12, 20, 21]
  assert len(ds) == 2
  assert 'annotations.json: skipping annotation id 101 (entry' in caplog.text
  for kind, i in (('annotation', 106), ('annotation', 107), ('image', 8)):
    assert f'skipping {kind} id {i} (entry' in caplog.text


def test_missing_and_invalid_files(folder, tmp_path):
  with pytest.raises(example.DatasetError, match='absent.json'):
    folder.dataset(str(tmp_path / 'absent.json'))
  (tmp_path / 'bad.json').write_text('{"images": [')
  with pytest.raises(example.DatasetError, match='bad.json.*invalid JSON'):
    folder.dataset(str(tmp_path / 'bad.json'))
  (tmp_path / 'list.json').write_text('[]')
  with pytest.raises(example.DatasetError, match='list.json'):
    folder.dataset(str(tmp_path / 'list.json'))
  with pytest.raises(example.DatasetError, match='no_images'):
    coco.CocoKeypoints(str(tmp_path / 'annotations.json'),
                       str(tmp_path / 'no_images'))


def test_damaged_image_and_part_map_raise_damaged_sample(folder):
  (folder.root / 'images' / 'seven.jpg').write_bytes(b'not a jpeg')
  parts = np.zeros((30, 20), np.uint8)
  parts[0, 0] = 9  # Not a BODY_PARTS6 label.
  cv2.imwrite(str(folder.root / 'parts' / 'three.png'), parts)
  ds = folder.dataset()
  with pytest.raises(example.DamagedSampleError, match='seven.jpg'):
    ds[1]  # pylint: disable=pointless-statement
  with pytest.raises(example.DamagedSampleError, match=r'three.png.*\[9\]'):
    ds[0]  # pylint: disable=pointless-statement


def _keypoint_ap(dataset):
  """COCO keypoint AP of the ground truth scored against itself."""
  results = [dict(image_id=a['image_id'], category_id=1, score=1.0,
                  keypoints=a['keypoints'])
             for a in dataset.coco.anns.values()
             if not a['iscrowd'] and a['num_keypoints'] > 0]
  with contextlib.redirect_stdout(io.StringIO()):
    evaluator = cocoeval.COCOeval(dataset.coco,
                                  dataset.coco.loadRes(results), 'keypoints')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
  return evaluator.stats[0]


def test_coco_object_evaluates_normalised_annotations(folder, tmp_path):
  assert _keypoint_ap(folder.dataset()) == pytest.approx(1.0)
  data = json.loads((folder.root / 'annotations.json').read_text())
  del data['categories']
  (tmp_path / 'no_categories.json').write_text(json.dumps(data))
  ds = folder.dataset(str(tmp_path / 'no_categories.json'))
  assert _keypoint_ap(ds) == pytest.approx(1.0)


def _instances_file(folder, path):
  """`folder`'s file as a COCO instances file writes it: no keypoints, and
  categories without a keypoints field, person among others."""
  data = json.loads((folder.root / 'annotations.json').read_text())
  for ann in data['annotations']:
    del ann['keypoints'], ann['num_keypoints']
  data['annotations'].append(dict(
      id=30, image_id=7, category_id=3, iscrowd=0, bbox=[0, 0, 5, 5],
      area=12.5, segmentation=[[0, 0, 5, 0, 5, 5]]))
  data['categories'] = [dict(id=1, name='person', supercategory='person'),
                        dict(id=3, name='car', supercategory='vehicle')]
  path.write_text(json.dumps(data))
  return str(path)


def test_instances_file_reads_people_with_masks_and_no_keypoints(
    folder, tmp_path):
  expected = folder.dataset()
  path = _instances_file(folder, tmp_path / 'instances.json')
  ds = folder.dataset(path)
  assert ds.name == path  # Errors about the data name the file.
  assert ds.num_skipped == 0 and sorted(ds.coco.anns) == [10, 11, 12, 20, 21]
  assert not any(a['num_keypoints'] for a in ds.coco.anns.values())
  assert len(ds) == len(expected) == 2
  for i in range(len(ds)):
    ex, want = ds[i], expected[i]
    for key in ('boxes', 'is_crowd', 'person_masks'):
      np.testing.assert_array_equal(ex[key], want[key], err_msg=key)
    assert ex['keypoints'].shape == want['keypoints'].shape
    assert not ex['keypoints'].any()


def test_skip_empty_images_is_a_config_key(folder):
  folder.write(extra_images=[dict(id=9, file_name='nine.jpg', height=10,
                                  width=10)])
  cfg = datasets.default_config()
  cfg.update(name='coco', root=str(folder.root))
  cfg.coco.update(train_annotations='annotations.json', train_images='images')
  # Kept by default: full-image segmentation learns background from them.
  assert datasets.build(cfg, 'train').image_ids == [3, 7, 9]
  cfg.coco.skip_empty_images = True
  assert datasets.build(cfg, 'train').image_ids == [3, 7]


def test_detections(tmp_path):
  dets = [
      dict(image_id=1, category_id=1, bbox=[0, 0, 10, 20], score=0.2),
      dict(image_id=1, category_id=1, bbox=[5, 5, 1, 2], score=0.9),
      dict(image_id=1, category_id=3, bbox=[5, 5, 1, 2], score=0.9),
      dict(image_id=2, category_id=1, bbox=[1, 1, 2, 2], score=0.05),
      dict(image_id=42, category_id=1, bbox=[1, 1, 2, 2], score=0.5),
      dict(image_id=1, category_id=1, bbox=[1, 1, 2], score=0.5),
      dict(image_id=1, category_id=1, bbox=[1, 1, 2, -2], score=0.5),
      dict(image_id=1, category_id=1, bbox=[1, 1, 2, 2]),
  ]
  path = tmp_path / 'dets.json'
  path.write_text(json.dumps(dets))
  out = coco.load_detections(str(path), [1, 2, 3], min_score=0.1)
  assert sorted(out) == [1, 2, 3]
  boxes, scores = out[1]
  np.testing.assert_allclose(scores, [0.9, 0.2])
  np.testing.assert_array_equal(boxes, [[5, 5, 6, 7], [0, 0, 10, 20]])
  assert boxes.dtype == scores.dtype == np.float32
  assert out[2][0].shape == (0, 4) and out[3][1].shape == (0,)
  # Without ids (e.g. frame numbers of a video): every id in the file with
  # a detection above the threshold.
  every = coco.load_detections(str(path), None, min_score=0.1)
  assert sorted(every) == [1, 42]
  np.testing.assert_array_equal(every[1][0], boxes)
  with pytest.raises(example.DatasetError, match='nope.json'):
    coco.load_detections(str(tmp_path / 'nope.json'), [1])
  path.write_text('{"image_id": 1}')
  with pytest.raises(example.DatasetError, match='dets.json'):
    coco.load_detections(str(path), [1])


def test_detections_log_skipped_entries(tmp_path, caplog):
  path = tmp_path / 'dets.json'
  path.write_text(json.dumps([
      dict(image_id=42, category_id=1, bbox=[1, 1, 2, 2], score=0.5),
      dict(image_id=1, category_id=1, bbox=[1, 1, 2], score=0.5)]))
  assert len(coco.load_detections(str(path), [1])[1][0]) == 0
  assert 'dets.json: skipped 2 of 2' in caplog.text


def test_keypoint_results_infer_joint_count_and_sort(tmp_path):
  def kp(v):
    return [v, v + 1, 0.9] * 3

  path = tmp_path / 'poses.json'
  path.write_text(json.dumps([
      dict(image_id=1, category_id=1, keypoints=kp(1), score=0.3),
      dict(image_id=1, category_id=1, keypoints=kp(5), score=0.8),
      dict(image_id=1, category_id=1, keypoints=[1, 2, 3], score=0.9),
      dict(image_id=2, category_id=1, keypoints=kp(2), score=0.01)]))
  out = coco.load_keypoint_results(str(path), [1, 2], min_score=0.1)
  people, scores = out[1]
  assert people.shape == (2, 3, 3) and people.dtype == np.float32
  np.testing.assert_allclose(scores, [0.8, 0.3])
  np.testing.assert_allclose(people[0, 0], [5, 6, 0.9])
  assert out[2][0].shape == (0, 3, 3)
  # With the count given, entries of another size are the malformed ones.
  assert len(coco.load_keypoint_results(str(path), [1, 2], 1)[1][0]) == 1


# --- real data ---------------------------------------------------------------


@pytest.fixture
def coco_fixture(shared_data):
  folder = shared_data / 'fixtures' / 'coco'
  raw = json.loads((folder / 'test_coco.json').read_text())
  return folder, raw


def test_real_coco_counts_and_min_keypoints(coco_fixture):
  folder, _ = coco_fixture
  ds = coco.CocoKeypoints(str(folder / 'test_coco.json'), str(folder))
  assert len(ds) == 4 and ds.num_skipped == 0
  assert ds.image_ids == [785, 40083, 196141, 197388]
  people = [ds.annotation(i) for i in range(len(ds))]
  assert sum(len(p['boxes']) for p in people) == 14
  assert not any(p['is_crowd'].any() for p in people)
  zero = {a['id'] for a in ds.coco.anns.values() if a['num_keypoints'] == 0}
  assert zero == {1202706, 508900}
  strict = coco.CocoKeypoints(str(folder / 'test_coco.json'), str(folder),
                              min_keypoints=1)
  kept = [strict.annotation(i)['keypoints'] for i in range(len(strict))]
  # The two people without keypoints are on images 40083 and 196141.
  assert [len(k) for k in kept] == [1, 2, 4, 5]
  assert all((k[..., 2] > 0).sum(-1).min() >= 1 for k in kept)


def test_real_coco_values_and_masks(coco_fixture):
  folder, raw = coco_fixture
  ds = coco.CocoKeypoints(str(folder / 'test_coco.json'), str(folder))
  ex = ds[ds.image_ids.index(40083)]
  raw_anns = sorted((a for a in raw['annotations'] if a['image_id'] == 40083),
                    key=lambda a: a['id'])
  np.testing.assert_array_equal(
      ex['keypoints'], np.reshape([a['keypoints'] for a in raw_anns],
                                  (-1, 17, 3)))
  x, y, w, h = raw_anns[0]['bbox']
  np.testing.assert_allclose(ex['boxes'][0], [x, y, x + w, y + h], rtol=1e-6)
  for i in range(len(ds)):
    ex = ds[i]
    assert ex['image'].shape == (ex['height'], ex['width'], 3)
    areas = [a['area'] for a in sorted(raw['annotations'],
                                       key=lambda a: a['id'])
             if a['image_id'] == ex['image_id']]
    assert len(areas) == len(ex['person_masks'])
    for mask, area in zip(ex['person_masks'], areas):
      assert abs(int(mask.sum()) - area) <= max(0.02 * area, 10)


def test_real_coco_ground_truth_scores_perfectly(coco_fixture):
  folder, _ = coco_fixture
  ds = coco.CocoKeypoints(str(folder / 'test_coco.json'), str(folder))
  assert _keypoint_ap(ds) == pytest.approx(1.0)


def test_real_ochuman_rle_masks(shared_data):
  folder = shared_data / 'fixtures' / 'ochuman'
  raw = json.loads((folder / 'test_ochuman.json').read_text())
  ds = coco.CocoKeypoints(str(folder / 'test_ochuman.json'), str(folder))
  assert len(ds) == 3 and ds.num_skipped == 0
  assert sum(len(ds.annotation(i)['boxes']) for i in range(3)) == 5
  first = raw['annotations'][0]
  ex = ds[ds.image_ids.index(int(first['image_id']))]
  np.testing.assert_allclose(ex['keypoints'][0].ravel(), first['keypoints'],
                             rtol=1e-6)
  assert isinstance(first['segmentation']['counts'], str)
  for i in range(len(ds)):
    ex = ds[i]
    for mask, box in zip(ex['person_masks'], ex['boxes']):
      x1, y1, x2, y2 = box.astype(int)
      assert mask.sum() > 10000
      assert mask[y1:y2, x1:x2].sum() >= 0.75 * mask.sum()
  assert _keypoint_ap(ds) == pytest.approx(1.0)


def test_real_detections(coco_fixture):
  folder, _ = coco_fixture
  path = folder / 'test_coco_det_AP_H_56.json'
  raw = json.loads(path.read_text())
  ds = coco.CocoKeypoints(str(folder / 'test_coco.json'), str(folder))
  dets = coco.load_detections(str(path), ds)
  assert sorted(dets) == sorted(ds.image_ids)
  assert sum(len(s) for _, s in dets.values()) == 118
  for boxes, scores in dets.values():
    assert (np.diff(scores) <= 0).all()
    assert (boxes[:, 2:] >= boxes[:, :2]).all()
  best = max((d for d in raw if d['image_id'] == 785),
             key=lambda d: d['score'])
  x, y, w, h = best['bbox']
  np.testing.assert_allclose(dets[785][0][0], [x, y, x + w, y + h],
                             rtol=1e-6)
  confident = coco.load_detections(str(path), ds.image_ids, min_score=0.5)
  assert sum(len(s) for _, s in confident.values()) == sum(
      d['score'] >= 0.5 for d in raw)
