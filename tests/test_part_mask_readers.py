"""Tests of the PASCAL-Part and label-PNG folder readers."""

import cv2
import numpy as np
import pytest

from hpe_jax.data import example
from hpe_jax.data import part_masks
from hpe_jax.data import skeletons


def _make_folder(root, labels, instances=None):
  """Images, label PNGs and optional instance PNGs named 000, 001, ..."""
  for sub in ('images', 'labels', 'instances'):
    (root / sub).mkdir()
  for i, label in enumerate(labels):
    stem = f'{i:03d}'
    cv2.imwrite(str(root / 'images' / f'{stem}.jpg'),
                np.full(label.shape + (3,), 50, np.uint8))
    cv2.imwrite(str(root / 'labels' / f'{stem}.png'), label)
    if instances is not None:
      cv2.imwrite(str(root / 'instances' / f'{stem}.png'), instances[i])
  return root


def _folder_dataset(root, **kwargs):
  return part_masks.PartMapFolder(str(root / 'images'), str(root / 'labels'),
                                  skeletons.BODY_PARTS6, **kwargs)


# --- synthetic files ---------------------------------------------------------


def test_folder_with_instances(tmp_path):
  labels = np.zeros((12, 16), np.uint8)
  labels[2:6, 3:7] = 1
  labels[8:10, 8:15] = 255
  instances = np.zeros((12, 16), np.uint8)
  instances[2:6, 3:7] = 1
  instances[8:10, 8:15] = 3  # Person 2 is fully hidden.
  root = _make_folder(tmp_path, [labels], [instances])
  ds = _folder_dataset(root, instance_dir=str(root / 'instances'))
  assert ds.has_masks and ds.skeleton is None and len(ds) == 1
  ex = ds[0]
  assert (ex['height'], ex['width']) == (12, 16)
  np.testing.assert_array_equal(ex['part_map'], labels)
  assert ex['person_masks'].shape == (3, 12, 16)
  np.testing.assert_array_equal(ex['person_masks'][2], instances == 3)
  np.testing.assert_array_equal(
      ex['boxes'], [[3, 2, 7, 6], [0, 0, 0, 0], [8, 8, 15, 10]])
  assert ex['keypoints'].shape == (3, 0, 3)
  assert not ex['is_crowd'].any() and np.isnan(ex['head_boxes']).all()


def test_folder_without_instances_has_no_people(tmp_path):
  root = _make_folder(tmp_path, [np.zeros((5, 7), np.uint8)] * 2)
  ds = _folder_dataset(root, name='plain')
  assert not ds.has_masks and ds.name == 'plain' and len(ds) == 2
  ex = ds[1]
  assert ex['image_id'] == 2 and ex['image_path'].endswith('001.jpg')
  assert ex['boxes'].shape == (0, 4) and ex['keypoints'].shape == (0, 0, 3)
  assert 'person_masks' not in ex


def test_list_file_of_stems_or_paths(tmp_path):
  root = _make_folder(tmp_path, [np.zeros((5, 7), np.uint8)] * 3)
  (root / 'ids.txt').write_text('002\n000\n\n')
  (root / 'paths.txt').write_text(
      '/images/002.jpg /labels/002.png\n/images/000.jpg /labels/000.png\n')
  for name in ('ids.txt', 'paths.txt'):
    ds = _folder_dataset(root, list_file=str(root / name))
    assert [ds.annotation(i)['image_path'][-7:] for i in range(len(ds))] == [
        '002.jpg', '000.jpg']
  with pytest.raises(example.DatasetError, match='absent.txt'):
    _folder_dataset(root, list_file=str(root / 'absent.txt'))


def test_folder_damage(tmp_path):
  bad_label = np.zeros((5, 7), np.uint8)
  bad_label[1, 1] = 7  # BODY_PARTS6 has labels 0..6.
  root = _make_folder(tmp_path, [bad_label, np.zeros((5, 7), np.uint8),
                                 np.zeros((5, 7), np.uint8)])
  (root / 'images' / '001.jpg').write_bytes(b'junk')
  (root / 'images' / '002.jpg').unlink()
  ds = _folder_dataset(root)
  with pytest.raises(example.DamagedSampleError, match=r'000.png.*\[7\]'):
    ds[0]  # pylint: disable=pointless-statement
  with pytest.raises(example.DamagedSampleError, match='001.jpg'):
    ds[1]  # pylint: disable=pointless-statement
  with pytest.raises(example.DamagedSampleError, match='002.jpg.*missing'):
    ds[2]  # pylint: disable=pointless-statement
  cv2.imwrite(str(root / 'labels' / '001.png'), np.zeros((5, 8), np.uint8))
  with pytest.raises(example.DamagedSampleError, match='001.png.*8x5'):
    part_masks.read_part_map(str(root / 'labels' / '001.png'),
                             skeletons.BODY_PARTS6, (5, 7))
  with pytest.raises(example.DatasetError, match='nowhere'):
    part_masks.PartMapFolder(str(root / 'images'), str(root / 'nowhere'),
                             skeletons.CIHP20)


def test_pascal_part_damaged_mat_is_skipped(tmp_path, caplog):
  (tmp_path / 'images').mkdir()
  (tmp_path / 'annotations_mat').mkdir()
  (tmp_path / 'annotations_mat' / 'broken.mat').write_bytes(b'MATLAB junk')
  ds = part_masks.PascalPart(str(tmp_path))
  assert len(ds) == 0 and ds.num_skipped == 1
  assert 'broken.mat' in caplog.text
  with pytest.raises(example.DatasetError, match='annotations_mat'):
    part_masks.PascalPart(str(tmp_path / 'nowhere'))


# --- real data ---------------------------------------------------------------


def test_real_pascal_part_matches_reference_pngs(shared_data):
  root = shared_data / 'pascal_part'
  ds = part_masks.PascalPart(str(root))
  assert len(ds) == 8 and ds.num_skipped == 0 and ds.has_masks
  num_people = 0
  for i in range(len(ds)):
    ex = ds[i]
    stem = ex['image_path'].rsplit('/', 1)[1][:-len('.jpg')]
    reference = cv2.imread(str(root / 'person_part_png' / f'{stem}.png'),
                           cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ex['part_map'], reference, err_msg=stem)
    # The instance PNG paints persons in order, later ones on top.
    instances = cv2.imread(str(root / 'person_instance_png' / f'{stem}.png'),
                           cv2.IMREAD_UNCHANGED)
    painted = np.zeros_like(instances)
    for k, mask in enumerate(ex['person_masks']):
      painted[mask > 0] = k + 1
    np.testing.assert_array_equal(painted, instances, err_msg=stem)
    np.testing.assert_array_equal(
        ex['boxes'], example.boxes_from_masks(ex['person_masks']))
    assert ex['keypoints'].shape == (len(ex['boxes']), 0, 3)
    num_people += len(ex['boxes'])
  assert num_people == 19


def test_real_person_part_pngs_as_folder(shared_data):
  root = shared_data / 'pascal_part'
  ds = part_masks.PartMapFolder(
      str(root / 'images'), str(root / 'person_part_png'),
      skeletons.BODY_PARTS6, instance_dir=str(root / 'person_instance_png'))
  assert len(ds) == 8
  labels = set()
  for i in range(len(ds)):
    ex = ds[i]
    labels |= set(np.unique(ex['part_map']).tolist())
    # Instances overlap in the .mat, so the PNG has only visible parts.
    assert ex['person_masks'].sum(0).max() == 1
  assert labels == {0, 1, 2, 3, 4, 5, 6, 255}
  assert sum(len(ds.annotation(i)['boxes']) for i in range(len(ds))) == 19


def test_real_cihp(shared_data):
  root = shared_data / 'cihp'
  by_ids = part_masks.PartMapFolder(
      str(root / 'images'), str(root / 'labels'), skeletons.CIHP20,
      list_file=str(root / 'list' / 'val_id.txt'), name='cihp')
  by_paths = part_masks.PartMapFolder(
      str(root / 'images'), str(root / 'labels'), skeletons.CIHP20,
      list_file=str(root / 'list' / 'val.txt'), name='cihp')
  assert len(by_ids) == len(by_paths) == 5
  seen = set()
  for i in range(5):
    ex = by_ids[i]
    assert ex['image_path'] == by_paths.annotation(i)['image_path']
    assert ex['part_map'].shape == ex['image'].shape[:2] == (
        ex['height'], ex['width'])
    assert ex['part_map'].max() <= 19
    assert len(ex['boxes']) == 0
    seen |= set(np.unique(ex['part_map']).tolist())
  # Every CIHP class but glove (3) and sunglasses (4) occurs in these five.
  assert seen == set(range(20)) - {3, 4}
