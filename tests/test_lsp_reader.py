"""Tests of the LSP / LSPET reader, image-size headers and ConcatDataset."""

import struct

import cv2
import numpy as np
import pytest
import scipy.io

from hpe_jax.data import concat
from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import lsp
from hpe_jax.data import skeletons


def _write_jpeg(path, height, width, seed=0):
  pixels = np.random.default_rng(seed).integers(
      0, 255, (height, width, 3), np.uint8)
  assert cv2.imwrite(str(path), pixels)


def _make_lsp(root, joints, sizes, pattern='im%04d.jpg'):
  (root / 'images').mkdir(parents=True)
  for i, (h, w) in enumerate(sizes):
    _write_jpeg(root / 'images' / (pattern % (i + 1)), h, w, seed=i)
  scipy.io.savemat(root / 'joints.mat', {'joints': joints})
  return root


def _lsp_joints(num_images):
  """[3, 14, N] MATLAB joints, with joint 3 of image 1 occluded."""
  rng = np.random.default_rng(1)
  joints = np.zeros((3, 14, num_images))
  joints[:2] = rng.uniform(1, 40, (2, 14, num_images))
  joints[2, 3, 0] = 1
  return joints


# --- synthetic files ---------------------------------------------------------


def test_lsp_layout_flags_and_coordinates(tmp_path):
  joints = _lsp_joints(3)
  root = _make_lsp(tmp_path / 'lsp', joints, [(50, 40), (60, 45), (30, 20)])
  ds = lsp.LeedsSportsPose(str(root), split='all')
  assert len(ds) == 3 and ds.num_skipped == 0
  ex = ds[0]
  np.testing.assert_allclose(ex['keypoints'][0, :, :2],
                             joints[:2, :, 0].T - 1, rtol=1e-6)
  expected_v = np.full(14, 2)
  expected_v[3] = 1  # Flag 1 means occluded in LSP.
  np.testing.assert_array_equal(ex['keypoints'][0, :, 2], expected_v)
  assert (ex['height'], ex['width']) == (50, 40)
  assert ex['image'].shape == (50, 40, 3)
  assert ex['image_id'] == 1 and ex['image_path'].endswith('im0001.jpg')
  np.testing.assert_allclose(
      ex['boxes'][0], [*ex['keypoints'][0, :, :2].min(0),
                       *ex['keypoints'][0, :, :2].max(0)])
  assert np.isnan(ex['head_boxes']).all()
  assert ds.skeleton is skeletons.LSP14


def test_lspet_layout_visibility_and_absent_joints(tmp_path):
  joints = np.zeros((14, 3, 2))
  joints[:, :2] = 10.0
  joints[:, 2] = 1
  joints[0, :, 0] = [0, -26.1, 0]  # Absent: the annotators left it <= 0.
  joints[1, :, 0] = [12.0, 7.0, 0]  # Not visible but placed: hidden.
  joints[2, :, 0] = [5.0, -0.5, 1]  # Visible just above the image.
  root = _make_lsp(tmp_path / 'lspet', joints, [(20, 30), (20, 30)],
                   'im%05d.jpg')
  ds = lsp.LeedsSportsPose(str(root), split='train', variant='lspet')
  kp = ds.annotation(0)['keypoints'][0]
  np.testing.assert_array_equal(kp[0], [0, 0, 0])
  np.testing.assert_array_equal(kp[1], [11, 6, 1])
  np.testing.assert_allclose(kp[2], [4, -1.5, 2])
  assert ds.annotation(0)['image_id'] == 100001
  assert ds.annotation(1)['image_path'].endswith('im00002.jpg')
  with pytest.raises(ValueError, match='splits'):
    lsp.LeedsSportsPose(str(root), split='test', variant='lspet')


def test_layout_must_match_variant(tmp_path):
  root = _make_lsp(tmp_path / 'lsp', np.zeros((14, 3, 1)), [(10, 10)])
  with pytest.raises(example.DatasetError, match='joints.mat.*3, 14, N'):
    lsp.LeedsSportsPose(str(root), variant='lsp')
  scipy.io.savemat(root / 'joints.mat', {'joints': np.zeros((3, 15, 1))})
  with pytest.raises(example.DatasetError, match=r'joints.mat.*\(3, 15, 1\)'):
    lsp.LeedsSportsPose(str(root), variant='lsp')


def test_missing_or_invalid_files_raise_dataset_error(tmp_path):
  root = _make_lsp(tmp_path / 'lsp', _lsp_joints(1), [(10, 10)])
  (root / 'joints.mat').write_bytes(b'not a mat file at all')
  with pytest.raises(example.DatasetError, match='joints.mat'):
    lsp.LeedsSportsPose(str(root))
  (root / 'joints.mat').unlink()
  with pytest.raises(example.DatasetError, match='joints.mat.*does not exist'):
    lsp.LeedsSportsPose(str(root))
  with pytest.raises(example.DatasetError, match='images'):
    lsp.LeedsSportsPose(str(tmp_path / 'nowhere'))


def test_non_finite_entry_is_skipped_and_counted(tmp_path, caplog):
  joints = _lsp_joints(3)
  joints[0, 5, 1] = np.nan
  root = _make_lsp(tmp_path / 'lsp', joints, [(10, 10)] * 3)
  ds = lsp.LeedsSportsPose(str(root), split='all')
  assert ds.num_skipped == 1 and len(ds) == 2
  assert [ds.annotation(i)['image_id'] for i in range(2)] == [1, 3]
  assert 'im0002.jpg' in caplog.text and 'joints.mat' in caplog.text


def test_corrupt_image_raises_damaged_sample_naming_it(tmp_path):
  root = _make_lsp(tmp_path / 'lsp', _lsp_joints(2), [(10, 10)] * 2)
  bad = root / 'images' / 'im0002.jpg'
  bad.write_bytes(b'\xff\xd8 truncated')
  ds = lsp.LeedsSportsPose(str(root), split='all')
  ds[0]  # pylint: disable=pointless-statement
  with pytest.raises(example.DamagedSampleError, match='im0002.jpg'):
    ds[1]  # pylint: disable=pointless-statement
  bad.unlink()
  with pytest.raises(example.DamagedSampleError, match='im0002.jpg'):
    lsp.LeedsSportsPose(str(root), split='all')[1]


def _exif_orientation_segment(orientation):
  """An APP1 EXIF segment whose IFD0 holds only an orientation tag."""
  tiff = (b'II*\x00' + struct.pack('<I', 8) + struct.pack('<H', 1) +
          struct.pack('<HHIHH', 0x0112, 3, 1, orientation, 0) +
          struct.pack('<I', 0))
  payload = b'Exif\x00\x00' + tiff
  return b'\xff\xe1' + struct.pack('>H', len(payload) + 2) + payload


@pytest.mark.parametrize('kind', ['jpeg', 'progressive', 'png', 'exif'])
def test_image_size_agrees_with_decoder(tmp_path, kind):
  pixels = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
  path = tmp_path / ('x.png' if kind == 'png' else 'x.jpg')
  params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if kind == 'progressive' else []
  ok, data = cv2.imencode(path.suffix, pixels, params)
  assert ok
  data = data.tobytes()
  if kind == 'exif':  # Rotated by 90 degrees on display.
    data = data[:2] + _exif_orientation_segment(6) + data[2:]
  path.write_bytes(data)
  assert files.image_size(str(path)) == files.read_image(str(path)).shape[:2]
  if kind != 'exif':
    assert files.image_size(str(path)) == (37, 53)


def test_image_size_of_missing_or_broken_file_is_zero(tmp_path):
  assert files.image_size(str(tmp_path / 'missing.jpg')) == (0, 0)
  (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0\x00')
  assert files.image_size(str(tmp_path / 'broken.jpg')) == (0, 0)


class _FakeDataset(example.ImageDataset):
  """Empty-image dataset whose layout attributes are set per test."""

  def __init__(self, name, size, skeleton=skeletons.LSP14, has_masks=False):
    self.name, self._size = name, size
    self.skeleton, self.has_masks = skeleton, has_masks
    self.num_skipped = 1

  def __len__(self):
    return self._size

  def annotation(self, index):
    ann = example.empty_people(self.num_joints)
    ann.update(image_id=index, image_path=self.name, height=2, width=2)
    return ann

  def load_pixels(self, index, annotation):
    return {'image': np.zeros((2, 2, 3), np.uint8)}


def test_concat_indexes_across_parts():
  ds = concat.ConcatDataset([_FakeDataset('a', 2), _FakeDataset('b', 0),
                             _FakeDataset('c', 3)])
  assert len(ds) == 5 and ds.num_skipped == 3 and ds.name == 'a+b+c'
  got = [(ds[i]['image_path'], ds[i]['image_id']) for i in range(5)]
  assert got == [('a', 0), ('a', 1), ('c', 0), ('c', 1), ('c', 2)]
  with pytest.raises(IndexError):
    ds.annotation(5)


@pytest.mark.parametrize('other', [
    _FakeDataset('mpii', 1, skeleton=skeletons.MPII16),
    _FakeDataset('masks', 1, has_masks=True)])
def test_concat_rejects_different_layouts(other):
  with pytest.raises(ValueError, match='differs'):
    concat.ConcatDataset([_FakeDataset('lsp', 1), other])


# --- real data ---------------------------------------------------------------


def test_real_lsp_split_and_first_joint(shared_data):
  raw = scipy.io.loadmat(shared_data / 'lsp' / 'joints.mat')['joints']
  train = lsp.LeedsSportsPose(str(shared_data / 'lsp'), split='train')
  test = lsp.LeedsSportsPose(str(shared_data / 'lsp'), split='test')
  assert (len(train), len(test)) == (1000, 1000)
  assert train.annotation(0)['image_path'].endswith('im0001.jpg')
  assert train.annotation(999)['image_id'] == 1000
  assert test.annotation(0)['image_id'] == 1001
  assert test.annotation(999)['image_path'].endswith('im2000.jpg')
  np.testing.assert_allclose(train.annotation(0)['keypoints'][0, 0, :2],
                             raw[:2, 0, 0] - 1, rtol=1e-6)
  np.testing.assert_allclose(test.annotation(5)['keypoints'][0, :, :2],
                             raw[:2, :, 1005].T - 1, rtol=1e-6)


def test_real_lsp_occluded_fraction(shared_data):
  ds = lsp.LeedsSportsPose(str(shared_data / 'lsp'), split='all')
  v = np.stack([ds.annotation(i)['keypoints'][0, :, 2]
                for i in range(len(ds))])
  assert v.min() >= 1  # LSP labels every joint.
  assert (v == 1).mean() == pytest.approx(0.073, abs=0.002)


def test_real_lspet_visibility_and_absent_joints(shared_data):
  raw = scipy.io.loadmat(shared_data / 'lspet' / 'joints.mat')['joints']
  ds = lsp.LeedsSportsPose(str(shared_data / 'lspet'), variant='lspet')
  assert len(ds) == 10000 and ds.num_skipped == 0
  kp = np.stack([ds.annotation(i)['keypoints'][0] for i in range(len(ds))])
  assert (kp[..., 2] == 2).mean() == pytest.approx(0.880, abs=0.002)
  absent = (raw[:, 2] == 0).T
  assert absent.any()
  np.testing.assert_array_equal(kp[absent], 0)
  assert ds.annotation(0)['image_id'] == 100001
  assert ds.annotation(9999)['image_path'].endswith('im10000.jpg')


def test_real_image_sizes_match_decoded_images(shared_data):
  for ds in (lsp.LeedsSportsPose(str(shared_data / 'lsp'), split='all'),
             lsp.LeedsSportsPose(str(shared_data / 'lspet'),
                                 variant='lspet')):
    for i in range(0, len(ds), len(ds) // 25):
      ex = ds[i]  # Raises if the header size disagrees with the pixels.
      assert ex['image'].shape[:2] == (ex['height'], ex['width'])


def test_real_concat_lsp_train_and_lspet(shared_data):
  train = lsp.LeedsSportsPose(str(shared_data / 'lsp'), split='train')
  extra = lsp.LeedsSportsPose(str(shared_data / 'lspet'), variant='lspet')
  ds = concat.ConcatDataset([train, extra])
  assert len(ds) == 11000 and ds.skeleton is skeletons.LSP14
  assert ds.annotation(999)['image_id'] == 1000
  assert ds.annotation(1000)['image_id'] == 100001
  assert ds[1000]['image_path'].endswith('im00001.jpg')
