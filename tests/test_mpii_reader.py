"""Tests of the MPII list-JSON reader."""

import json

import cv2
import numpy as np
import pytest
import scipy.io

from hpe_jax.data import example
from hpe_jax.data import mpii
from hpe_jax.data import skeletons


def _entry(image, offset=0.0, **extra):
  joints = [[10.0 + offset + j, 20.0 + 2 * j] for j in range(16)]
  vis = [1] * 16
  vis[0] = 0
  joints[0] = [-1.0, -1.0]
  return dict(image=image, joints=joints, joints_vis=vis,
              center=[30.0, 40.0], scale=0.5, **extra)


def _make_mpii(tmp_path, entries, images=('a.jpg', 'b.jpg')):
  for name in images:
    cv2.imwrite(str(tmp_path / name), np.zeros((64, 96, 3), np.uint8))
  path = tmp_path / 'anno.json'
  path.write_text(json.dumps(entries))
  return str(path)


# --- synthetic files ---------------------------------------------------------


def test_groups_people_by_image_and_converts_coordinates(tmp_path):
  entries = [_entry('a.jpg'), _entry('b.jpg'), _entry('a.jpg', offset=30)]
  ds = mpii.Mpii(_make_mpii(tmp_path, entries), str(tmp_path))
  assert len(ds) == 2 and ds.skeleton is skeletons.MPII16
  ex = ds[0]
  assert ex['image_path'].endswith('a.jpg') and ex['image_id'] == 1
  assert (ex['height'], ex['width']) == (64, 96)
  assert ex['keypoints'].shape == (2, 16, 3)
  # 1-based MATLAB -> pixel index; unlabelled joints are zeros.
  np.testing.assert_array_equal(ex['keypoints'][1, 1], [40, 21, 2])
  np.testing.assert_array_equal(ex['keypoints'][0, 0], [0, 0, 0])
  # Centre (29, 39) moves down by 15 * 0.5; side 200 * 0.5.
  np.testing.assert_allclose(ex['boxes'][0], [-21, -3.5, 79, 96.5])
  assert ds[1]['keypoints'].shape == (1, 16, 3)


def test_estimated_head_boxes(tmp_path, caplog):
  ds = mpii.Mpii(_make_mpii(tmp_path, [_entry('a.jpg')]), str(tmp_path))
  assert ds.head_boxes_estimated
  assert 'estimated' in caplog.text
  kp = ds.annotation(0)['keypoints'][0]
  neck, top = kp[8, :2], kp[9, :2]
  side = np.linalg.norm(top - neck)
  mid = (neck + top) / 2
  np.testing.assert_allclose(ds.annotation(0)['head_boxes'][0],
                             [*(mid - side / 2), *(mid + side / 2)],
                             rtol=1e-6)


def test_head_boxes_from_entries_and_official_file(tmp_path):
  entries = [_entry('a.jpg', headbox=[[11, 21], [31, 41]]),
             _entry('b.jpg', headbox=[1, 2, 5, 6]), _entry('b.jpg')]
  path = _make_mpii(tmp_path, entries)
  src = np.zeros((2, 2, 3))
  src[:, :, 2] = [[101, 201], [151, 261]]  # [point, x/y, entry]
  scipy.io.savemat(tmp_path / 'gt_valid.mat', {'headboxes_src': src})
  ds = mpii.Mpii(path, str(tmp_path), str(tmp_path / 'gt_valid.mat'))
  assert not ds.head_boxes_estimated
  np.testing.assert_array_equal(ds.annotation(0)['head_boxes'],
                                [[10, 20, 30, 40]])
  np.testing.assert_array_equal(ds.annotation(1)['head_boxes'],
                                [[0, 1, 4, 5], [100, 200, 150, 260]])
  scipy.io.savemat(tmp_path / 'short.mat', {'headboxes_src': src[..., :2]})
  with pytest.raises(example.DatasetError, match='short.mat'):
    mpii.Mpii(path, str(tmp_path), str(tmp_path / 'short.mat'))


def test_malformed_entries_are_skipped_and_counted(tmp_path, caplog):
  bad_count = _entry('a.jpg')
  bad_count['joints'] = bad_count['joints'][:15]
  no_scale = _entry('b.jpg')
  del no_scale['scale']
  bad_vis = _entry('b.jpg')
  bad_vis['joints_vis'][3] = 2
  entries = [_entry('a.jpg'), bad_count, no_scale, bad_vis, 'junk']
  ds = mpii.Mpii(_make_mpii(tmp_path, entries), str(tmp_path))
  assert ds.num_skipped == 4
  assert len(ds) == 1 and len(ds.annotation(0)['keypoints']) == 1
  assert 'anno.json: skipping entry 1' in caplog.text


def test_missing_and_invalid_files(tmp_path):
  with pytest.raises(example.DatasetError, match='nothing.json'):
    mpii.Mpii(str(tmp_path / 'nothing.json'), str(tmp_path))
  (tmp_path / 'bad.json').write_text('[{"image": ')
  with pytest.raises(example.DatasetError, match='bad.json.*invalid JSON'):
    mpii.Mpii(str(tmp_path / 'bad.json'), str(tmp_path))
  (tmp_path / 'dict.json').write_text('{"image": "a.jpg"}')
  with pytest.raises(example.DatasetError, match='dict.json.*list'):
    mpii.Mpii(str(tmp_path / 'dict.json'), str(tmp_path))
  with pytest.raises(example.DatasetError, match='images'):
    mpii.Mpii(str(tmp_path / 'dict.json'), str(tmp_path / 'images'))


def test_corrupt_image_raises_damaged_sample(tmp_path):
  path = _make_mpii(tmp_path, [_entry('a.jpg'), _entry('b.jpg')])
  (tmp_path / 'b.jpg').write_bytes(b'garbage')
  ds = mpii.Mpii(path, str(tmp_path))
  with pytest.raises(example.DamagedSampleError, match='b.jpg'):
    ds[1]  # pylint: disable=pointless-statement


# --- real data ---------------------------------------------------------------


def test_real_mpii_fixture(shared_data):
  folder = shared_data / 'fixtures' / 'mpii'
  raw = json.loads((folder / 'test_mpii.json').read_text())
  ds = mpii.Mpii(str(folder / 'test_mpii.json'), str(folder))
  assert len(ds) == 5 and ds.num_skipped == 0
  assert ds.head_boxes_estimated
  for i, entry in enumerate(raw):
    ex = ds[i]  # One person per image in this fixture.
    assert ex['image_path'].endswith(entry['image'])
    assert ex['image'].shape[:2] == (ex['height'], ex['width']) == (
        cv2.imread(ex['image_path']).shape[:2])
    kp = ex['keypoints'][0]
    vis = np.array(entry['joints_vis']) > 0
    np.testing.assert_allclose(kp[vis, :2],
                               np.array(entry['joints'])[vis] - 1, rtol=1e-6)
    np.testing.assert_array_equal(kp[:, 2], np.where(vis, 2, 0))
    np.testing.assert_array_equal(kp[~vis], 0)
    s = entry['scale']
    cx, cy = np.array(entry['center']) - 1 + [0, 15 * s]
    np.testing.assert_allclose(
        ex['boxes'][0], [cx - 100 * s, cy - 100 * s, cx + 100 * s,
                         cy + 100 * s], rtol=1e-5)
    # Every labelled joint lies inside the person box.
    assert (kp[vis, :2] >= ex['boxes'][0, :2]).all()
    assert (kp[vis, :2] <= ex['boxes'][0, 2:]).all()
    assert np.isfinite(ex['head_boxes']).all()
  # 051423444.jpg has both ankles unlabelled.
  assert (ds.annotation(2)['keypoints'][0, [0, 5], 2] == 0).all()
