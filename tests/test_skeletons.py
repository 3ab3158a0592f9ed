"""Skeleton definitions and conversions between them."""

import json

import numpy as np
import pytest
from pycocotools import cocoeval

from hpe_jax import errors
from hpe_jax.data import datasets
from hpe_jax.data import skeleton_conversion
from hpe_jax.data import skeletons


@pytest.mark.parametrize('skeleton', list(skeletons.SKELETONS.values()),
                         ids=lambda s: s.name)
def test_flip_permutation_mirrors_names(skeleton):
  perm = skeleton.flip_permutation
  np.testing.assert_array_equal(perm[perm], np.arange(skeleton.num_joints))
  for i, j in enumerate(perm):
    a, b = skeleton.joint_names[i], skeleton.joint_names[j]
    assert a.replace('left_', 'right_') == b or a.replace('right_',
                                                          'left_') == b


def test_coco_sigmas_and_skeleton_match_the_official_ones(shared_data):
  official = cocoeval.Params(iouType='keypoints').kpt_oks_sigmas
  np.testing.assert_allclose(skeletons.COCO17.oks_sigmas, official)
  with open(shared_data / 'fixtures' / 'coco' / 'test_coco.json') as f:
    category = json.load(f)['categories'][0]
  assert tuple(category['keypoints']) == skeletons.COCO17.joint_names
  ours = {tuple(sorted(p)) for p in skeletons.COCO17.limb_indices + 1}
  assert ours == {tuple(sorted(p)) for p in category['skeleton']}


def test_lsp_order_is_the_datasets(shared_data):
  readme = ' '.join((shared_data / 'README.md').read_text().split())
  assert ('right ankle, right knee, right hip, left hip, left knee, left '
          'ankle, right wrist, right elbow, right shoulder, left shoulder, '
          'left elbow, left wrist, neck, head top') in readme
  assert skeletons.LSP14.joint_names[-2:] == ('neck', 'head_top')


def test_part_schema_flip_lut_swaps_sides():
  lut = skeletons.CIHP20.flip_lut
  names = skeletons.CIHP20.label_names
  assert names[lut[names.index('left_arm')]] == 'right_arm'
  assert lut[names.index('face')] == names.index('face')
  assert lut[255] == 255
  np.testing.assert_array_equal(skeletons.BODY_PARTS6.flip_lut[:7],
                                np.arange(7))


def _coco_person(**joints):
  kp = np.zeros((17, 3), np.float32)
  for name, xyv in joints.items():
    kp[skeletons.COCO17.index(name)] = xyv
  return kp


def test_coco_to_lsp_head_top_from_neck_and_face():
  kp = _coco_person(nose=(50, 40, 2), left_eye=(54, 36, 2),
                    right_eye=(46, 36, 1), left_shoulder=(70, 80, 2),
                    right_shoulder=(30, 80, 2), left_hip=(62, 140, 2))
  lsp = skeleton_conversion.convert_keypoints(kp, skeletons.COCO17,
                                              skeletons.LSP14)
  top = lsp[skeletons.LSP14.index('head_top')]
  neck = lsp[skeletons.LSP14.index('neck')]
  np.testing.assert_allclose(neck, (50, 80, 2))
  face = np.array([(50 + 54 + 46) / 3, (40 + 36 + 36) / 3])
  np.testing.assert_allclose(top[:2], face + 0.4 * (face - (50, 80)),
                             rtol=1e-6)
  assert top[2] == 1  # one face point was hidden
  np.testing.assert_allclose(lsp[skeletons.LSP14.index('left_hip')],
                             (62, 140, 2))
  assert (lsp[skeletons.LSP14.index('right_hip')] == 0).all()


def test_coco_to_lsp_head_top_without_shoulders_uses_nose_and_eyes():
  kp = _coco_person(nose=(50, 40, 2), left_eye=(54, 36, 2),
                    right_eye=(46, 36, 2))
  lsp = skeleton_conversion.convert_keypoints(kp, skeletons.COCO17,
                                              skeletons.LSP14)
  np.testing.assert_allclose(lsp[skeletons.LSP14.index('head_top')],
                             (50, 36 - 3 * 4, 2))
  assert (lsp[skeletons.LSP14.index('neck')] == 0).all()


def test_coco_to_lsp_head_top_unlabelled_without_enough_face():
  kp = _coco_person(nose=(50, 40, 2), left_eye=(54, 36, 2))
  lsp = skeleton_conversion.convert_keypoints(kp[None], skeletons.COCO17,
                                              skeletons.LSP14)
  assert (lsp[0, skeletons.LSP14.index('head_top')] == 0).all()


def test_mpii_lsp_round_trip_and_body25_from_coco():
  rng = np.random.default_rng(0)
  mpii = np.concatenate([rng.uniform(0, 100, (4, 16, 2)),
                         np.full((4, 16, 1), 2.0)], -1).astype(np.float32)
  lsp = skeleton_conversion.convert_keypoints(mpii, skeletons.MPII16,
                                              skeletons.LSP14)
  back = skeleton_conversion.convert_keypoints(lsp, skeletons.LSP14,
                                               skeletons.MPII16)
  for name in skeletons.LSP14.joint_names:
    src = 'upper_neck' if name == 'neck' else name
    np.testing.assert_allclose(back[:, skeletons.MPII16.index(src)],
                               mpii[:, skeletons.MPII16.index(src)])

  coco = rng.uniform(0, 100, (17, 3)).astype(np.float32)
  coco[:, 2] = 2
  body = skeleton_conversion.convert_keypoints(coco, skeletons.COCO17,
                                               skeletons.BODY25)
  mid_hip = body[skeletons.BODY25.index('mid_hip')]
  np.testing.assert_allclose(
      mid_hip[:2], (coco[11, :2] + coco[12, :2]) / 2, rtol=1e-6)
  assert (body[skeletons.BODY25.index('left_heel')] == 0).all()
  with pytest.raises(ValueError, match='coco17'):
    skeleton_conversion.convert_keypoints(coco[:5], skeletons.COCO17,
                                          skeletons.LSP14)


def test_converted_dataset_has_the_target_skeleton():
  config = datasets.default_config()
  config.synthetic.update(num_eval=2, image_size=(64, 64))
  plain = datasets.build(config, 'eval')
  config.skeleton = 'lsp14'
  converted = datasets.build(config, 'eval')
  assert datasets.skeleton(config) is skeletons.LSP14
  assert converted.skeleton is skeletons.LSP14 and converted.has_masks
  ann, ex = plain.annotation(1), converted[1]
  np.testing.assert_array_equal(
      ex['keypoints'], skeleton_conversion.convert_keypoints(
          ann['keypoints'], skeletons.COCO17, skeletons.LSP14))
  np.testing.assert_array_equal(ex['person_masks'], plain[1]['person_masks'])
  config.skeleton = 'coco17'  # the dataset's own: no wrapper
  assert datasets.build(config, 'eval').skeleton is skeletons.COCO17


# Schema files.

def _write(path, **fields):
  path.write_text(json.dumps(fields))
  return str(path)


FIVE_JOINTS = dict(
    kind='skeleton', joints=['head', 'lhand', 'rhand', 'lfoot', 'rfoot'],
    limbs=[['head', 'lhand'], ['head', 'rhand'], ['lfoot', 'rfoot']],
    mirror_pairs=[['lhand', 'rhand'], ['lfoot', 'rfoot']],
    torso=['head', 'lfoot'], head=['head', 'lhand'],
    lower_body=['lfoot', 'rfoot'])


def test_custom_skeleton_file_declares_flips_sides_and_normalisers(tmp_path):
  s = skeletons.get_skeleton(_write(tmp_path / 'five.json', **FIVE_JOINTS))
  assert s.name == 'five' and s.num_joints == 5
  np.testing.assert_array_equal(s.flip_permutation, [0, 2, 1, 4, 3])
  np.testing.assert_array_equal(s.side, [0, -1, 1, -1, 1])
  np.testing.assert_array_equal(s.lower_body, [0, 0, 0, 1, 1])
  assert s.torso_indices == (0, 3) and s.head_indices == (0, 1)
  assert s.oks_sigmas is None


@pytest.mark.parametrize('name', sorted(skeletons.SKELETONS))
def test_builtin_skeleton_files_round_trip(name, tmp_path):
  s = skeletons.SKELETONS[name]
  copy = skeletons.get_skeleton(_write(
      tmp_path / 'copy.json', kind='skeleton', name=name,
      joints=list(s.joint_names), limbs=[list(l) for l in s.limbs],
      torso=list(s.torso), oks_sigmas=s.oks_sigmas and list(s.oks_sigmas)))
  assert copy == s


def test_part_schema_file_ignores_and_merges_labels(tmp_path):
  schema = skeletons.get_part_schema(_write(
      tmp_path / 'clothes.json', kind='parts',
      labels=['bg', 'shirt', 'unlabelled', 'coat', 'left_shoe',
              'right_shoe', 'hat'],
      ignore=['unlabelled'], merge={'top': ['shirt', 'coat']},
      colors={'bg': [0, 0, 0], 'top': [255, 0, 0], 'left_shoe': [0, 255, 0],
              'right_shoe': [0, 0, 255], 'hat': [9, 9, 9]}))
  assert schema.label_names == ('bg', 'top', 'left_shoe', 'right_shoe', 'hat')
  assert schema.num_file_labels == 7
  np.testing.assert_array_equal(schema.file_lut[:7], [0, 1, 255, 1, 2, 3, 4])
  assert schema.file_lut[255] == 255
  np.testing.assert_array_equal(schema.flip_lut[:5], [0, 1, 3, 2, 4])
  assert schema.colors[1] == (255, 0, 0)


def test_a_schema_without_sides_flips_to_itself(tmp_path):
  schema = skeletons.get_part_schema(_write(
      tmp_path / 'plain.json', kind='parts',
      labels=[f'class_{i}' for i in range(59)]))
  assert schema.num_labels == 59
  np.testing.assert_array_equal(schema.flip_lut, np.arange(256))


@pytest.mark.parametrize('fields, message', [
    (dict(kind='skeleton'), "missing field(s) ['joints']"),
    (dict(kind='skeleton', joints=['a'], limbs=[['a', 'b']]),
     "unknown joint 'b'"),
    (dict(kind='skeleton', joints=['left_a']), "'left_a' has no mirror"),
    (dict(kind='skeleton', joints=['a'], colour=1), "unknown field(s)"),
    (dict(kind='pose', joints=['a']), '"kind" must be'),
    (dict(kind='parts', labels=['bg', 'x'], ignore=['y']),
     "unknown labels ['y']"),
    (dict(kind='parts', labels=['bg', 'x'], colors=[[0, 0, 0]]),
     'one RGB colour'),
])
def test_malformed_schema_files_name_the_file_and_the_problem(
    tmp_path, fields, message):
  path = _write(tmp_path / 'bad.json', **fields)
  with pytest.raises(errors.ConfigError) as e:
    skeletons.load_schema(path)
  assert str(e.value).startswith(path) and message in str(e.value)


def test_schema_kind_must_match_where_it_is_used(tmp_path):
  path = _write(tmp_path / 'five.json', **FIVE_JOINTS)
  with pytest.raises(errors.ConfigError, match='is not a part schema'):
    skeletons.get_part_schema(path)
  with pytest.raises(errors.ConfigError, match='not valid JSON'):
    (tmp_path / 'broken.json').write_text('{')
    skeletons.get_skeleton(str(tmp_path / 'broken.json'))
  with pytest.raises(errors.ConfigError, match='unknown skeleton'):
    skeletons.get_skeleton('coco18')


def test_torso_defaults_to_shoulder_and_hip_when_the_skeleton_has_them(
    tmp_path):
  body = skeletons.get_skeleton(_write(
      tmp_path / 'body.json', kind='skeleton',
      joints=['left_shoulder', 'right_shoulder', 'left_hip', 'right_hip']))
  assert body.torso_indices == (0, 3)
  hands = skeletons.get_skeleton(_write(
      tmp_path / 'hands.json', kind='skeleton', joints=['a', 'b']))
  assert hands.torso is None
