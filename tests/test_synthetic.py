"""Tests of the procedural synthetic-people dataset and its COCO export."""

from concurrent import futures
import json
import os
import pathlib
import pickle
import subprocess
import sys

import cv2
import numpy as np
from pycocotools import coco as coco_lib
import pytest

from hpe_jax.data import datasets
from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons
from hpe_jax.data import synthetic

H, W = 128, 160
NAMES = skeletons.COCO17.joint_names
PARTS = skeletons.BODY_PARTS6.label_names
FACE = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear')
HEAD_PRIMITIVES = ('skull', 'face', 'left_ear', 'right_ear', 'left_eye',
                   'right_eye', 'nose')


def own_primitives(joint: str) -> set[str]:
  """The visibility rule's segments of a joint, written out independently."""
  if joint in FACE:
    return set(HEAD_PRIMITIVES)
  side, kind = joint.split('_', 1)
  return {
      'shoulder': {'torso', 'neck', f'{side}_upper_arm'},
      'elbow': {f'{side}_upper_arm', f'{side}_lower_arm'},
      'wrist': {f'{side}_lower_arm', f'{side}_hand'},
      'hip': {'torso', f'{side}_upper_leg'},
      'knee': {f'{side}_upper_leg', f'{side}_lower_leg'},
      'ankle': {f'{side}_lower_leg', f'{side}_foot'},
  }[kind]


def plausible_parts(joint: str) -> set[int]:
  """Part labels a visible joint may lie on."""
  if joint in FACE:
    names = {'head'}
  else:
    names = {
        'shoulder': {'torso', 'upper_arms'},
        'elbow': {'upper_arms', 'lower_arms'},
        'wrist': {'lower_arms'},
        'hip': {'torso', 'upper_legs'},
        'knee': {'upper_legs', 'lower_legs'},
        'ankle': {'lower_legs'},
    }[joint.split('_', 1)[1]]
  return {PARTS.index(n) for n in names}


@pytest.fixture(scope='module')
def dataset():
  return synthetic.SyntheticPeople(60, seed=11, image_size=(H, W))


@pytest.fixture(scope='module')
def samples(dataset):
  return [dataset[i] for i in range(len(dataset))]


def assert_examples_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_same_seed_and_index_give_identical_samples():
  a = synthetic.SyntheticPeople(5, seed=3)
  b = synthetic.SyntheticPeople(5, seed=3)
  for i in range(5):
    assert_examples_equal(a[i], b[i])


def test_different_index_or_seed_give_different_samples():
  a = synthetic.SyntheticPeople(5, seed=3)
  b = synthetic.SyntheticPeople(5, seed=4)
  assert not np.array_equal(a[0]['image'], a[1]['image'])
  assert not np.array_equal(a[0]['image'], b[0]['image'])
  assert not np.array_equal(a[0]['keypoints'], b[0]['keypoints'])


def test_random_access_matches_sequential_generation():
  sequential = synthetic.SyntheticPeople(10, seed=5)
  for i in range(7):
    sequential[i]
  alone = synthetic.SyntheticPeople(10, seed=5)
  assert_examples_equal(sequential[7], alone[7])
  # Pixels of an index other than the cached annotation's.
  alone.annotation(2)
  pixels = alone.load_pixels(4, {})
  np.testing.assert_array_equal(pixels['image'], sequential[4]['image'])
  np.testing.assert_array_equal(pixels['part_map'],
                                sequential[4]['part_map'])


@pytest.mark.parametrize('cache_mb', [0.0, 16.0])
def test_pickled_dataset_gives_the_same_samples(cache_mb):
  ds = synthetic.SyntheticPeople(4, seed=2, cache_mb=cache_mb)
  before = ds[1]
  clone = pickle.loads(pickle.dumps(ds))
  assert_examples_equal(clone[1], before)
  # The drawn samples kept in memory do not travel to worker processes.
  assert len(pickle.dumps(ds)) < 2000


def test_kept_samples_are_the_drawn_ones_and_stay_within_the_budget():
  drawn = synthetic.SyntheticPeople(12, seed=3, image_size=(H, W))
  # About 3 of the 12 samples fit in the budget.
  kept = synthetic.SyntheticPeople(12, seed=3, image_size=(H, W),
                                   cache_mb=3 * H * W * 9 / 2**20)
  for _ in range(2):
    for i in range(12):
      assert_examples_equal(kept[i], drawn[i])
  # pylint: disable=protected-access
  assert 0 < len(kept._kept) < 12
  assert kept._kept_bytes <= kept._cache_bytes
  # A sample handed out is a copy: changing it leaves the kept one intact.
  first = next(iter(kept._kept))
  kept[first]['image'][:] = 0
  assert_examples_equal(kept[first], drawn[first])


def test_threads_sharing_a_dataset_get_the_right_samples():
  shared = synthetic.SyntheticPeople(16, seed=6, image_size=(H, W))
  with futures.ThreadPoolExecutor(4) as pool:
    got = list(pool.map(shared.__getitem__, list(range(16)) * 2))
  alone = synthetic.SyntheticPeople(16, seed=6, image_size=(H, W))
  for i, ex in enumerate(got):
    assert_examples_equal(ex, alone[i % 16])


def test_annotation_is_a_copy():
  ds = synthetic.SyntheticPeople(2, seed=2)
  ann = ds.annotation(0)
  ann['keypoints'][:] = -7
  assert (ds.annotation(0)['keypoints'] != -7).any()


def test_example_contract(dataset, samples):
  assert len(dataset) == 60
  assert dataset.name == 'synthetic'
  assert dataset.skeleton is skeletons.COCO17
  assert dataset.part_schema is skeletons.BODY_PARTS6
  assert dataset.has_masks
  for i, ex in enumerate(samples):
    p = len(ex['keypoints'])
    example_lib.check_annotation(ex, 17, 'synthetic')
    assert ex['image_id'] == i + 1
    assert ex['image_path'] == ''
    assert (ex['height'], ex['width']) == (H, W)
    assert ex['keypoints'].dtype == np.float32
    assert ex['boxes'].dtype == ex['head_boxes'].dtype == np.float32
    assert ex['is_crowd'].dtype == bool and not ex['is_crowd'].any()
    assert ex['image'].dtype == np.uint8 and ex['image'].shape == (H, W, 3)
    assert ex['person_masks'].dtype == np.uint8
    assert ex['person_masks'].shape == (p, H, W)
    assert set(np.unique(ex['person_masks'])) <= {0, 1}
    assert ex['part_map'].dtype == np.uint8 and ex['part_map'].shape == (H, W)
    assert ex['part_map'].max() < len(PARTS)
    assert 1 <= p <= 3
  with pytest.raises(IndexError):
    dataset[60]


def test_masks_partition_the_part_map(samples):
  for ex in samples:
    masks = ex['person_masks'].astype(int)
    assert masks.sum(0).max() <= 1, 'masks overlap'
    np.testing.assert_array_equal(masks.sum(0) > 0, ex['part_map'] > 0)
    # Every listed person is really there.
    assert (masks.sum((1, 2)) >= 0.005 * H * W).all()


def test_boxes_are_tight_around_masks(samples):
  for ex in samples:
    for mask, box in zip(ex['person_masks'], ex['boxes']):
      ys, xs = np.nonzero(mask)
      np.testing.assert_array_equal(
          box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_keypoints_outside_the_image_are_unlabelled(samples):
  seen_outside = False
  for ex in samples:
    kp = ex['keypoints']
    out = kp[..., 2] == 0
    seen_outside |= out.any()
    assert (kp[out][:, :2] == 0).all()
    x, y = kp[~out][:, 0], kp[~out][:, 1]
    assert ((x >= -0.5) & (x < W - 0.5) & (y >= -0.5) & (y < H - 0.5)).all()
  assert seen_outside


def test_visible_keypoints_lie_on_their_person_and_part(samples):
  for ex in samples:
    for p, kp in enumerate(ex['keypoints']):
      for j, (x, y, v) in enumerate(kp):
        if v != 2:
          continue
        c, r = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        assert ex['person_masks'][p, r, c] == 1, NAMES[j]
        assert ex['part_map'][r, c] in plausible_parts(NAMES[j]), NAMES[j]


def test_visibility_follows_the_front_most_surface(dataset, samples):
  """v = 2 exactly when the joint's own segment is in front and it faces us."""
  counts = np.zeros(3, int)
  for i, ex in enumerate(samples):
    scene = dataset.scene(i)
    for p, kp in enumerate(ex['keypoints']):
      for j, (x, y, v) in enumerate(kp):
        counts[int(v)] += 1
        if v == 0:
          continue
        c, r = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        front = scene.owner[r, c]
        k = scene.owner_primitive[front]
        on_own = (scene.owner_person[front] == p and k >= 0 and
                  synthetic.PRIMITIVES[k] in own_primitives(NAMES[j]))
        expected = 2 if on_own and not scene.turned_away[p, j] else 1
        assert v == expected, (i, p, NAMES[j])
  assert counts.min() > 20, counts


def test_hidden_keypoints_are_covered_or_turned_away(samples, dataset):
  """Hidden joints are under someone or something else, or face away."""
  by_other, by_self, turned = 0, 0, 0
  for i, ex in enumerate(samples):
    scene = dataset.scene(i)
    for p, kp in enumerate(ex['keypoints']):
      for j, (x, y, v) in enumerate(kp):
        if v != 1:
          continue
        c, r = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        if scene.turned_away[p, j]:
          turned += 1
        elif ex['person_masks'][p, r, c] == 0:
          # Another person or an occluding object, never empty background.
          assert scene.owner[r, c] != 0, (i, p, NAMES[j])
          by_other += 1
        else:
          # The same person: a part other than the joint's own.
          k = scene.owner_primitive[scene.owner[r, c]]
          assert synthetic.PRIMITIVES[k] not in own_primitives(NAMES[j])
          by_self += 1
  assert min(by_other, by_self, turned) > 0, (by_other, by_self, turned)


def test_face_features_are_drawn_only_when_facing_the_camera(dataset):
  """A turned-away eye or ear has no drawing that would give it away."""
  for i in range(30):
    scene = dataset.scene(i)
    for p in range(len(scene.heights)):
      ids = scene.owner[scene.owner_person[scene.owner] == p]
      drawn = {synthetic.PRIMITIVES[k] for k in scene.owner_primitive[ids]}
      for j, name in enumerate(FACE):
        if scene.turned_away[p, j]:
          assert name not in drawn, (i, p, name)


def test_head_boxes_contain_visible_face_keypoints(samples):
  for ex in samples:
    for kp, box in zip(ex['keypoints'], ex['head_boxes']):
      face = kp[:5]
      if np.isnan(box).any():
        assert np.isnan(box).all()
        assert (face[:, 2] == 0).all()
        continue
      x1, y1, x2, y2 = box
      assert x1 < W and y1 < H and x2 > 0 and y2 > 0
      assert 0 < x2 - x1 < W and 0 < y2 - y1 < H
      seen = face[face[:, 2] == 2]
      # Keypoints are pixel indices; boxes are pixel edges.
      assert (seen[:, 0] + 0.5 >= x1).all() and (seen[:, 0] + 0.5 <= x2).all()
      assert (seen[:, 1] + 0.5 >= y1).all() and (seen[:, 1] + 0.5 <= y2).all()


def test_statistics_are_not_degenerate(samples):
  """The generator keeps its variety: occlusion, crowds, truncation, poses."""
  kp = np.concatenate([ex['keypoints'] for ex in samples])
  v = kp[..., 2]
  labelled = v > 0
  hidden = (v == 1).sum() / labelled.sum()
  assert 0.1 < hidden < 0.45, hidden
  people = np.array([len(ex['keypoints']) for ex in samples])
  assert (people >= 2).mean() > 0.4 and (people == 1).any()
  truncated = (v == 0).any(1).mean()
  assert 0.05 < truncated < 0.6, truncated
  assert (labelled.sum(1) >= 1).mean() > 0.95
  # Sizes from small to image-filling.
  heights = np.concatenate([ex['boxes'][:, 3] - ex['boxes'][:, 1]
                            for ex in samples]) / H
  assert (heights < 0.3).mean() > 0.1 and (heights > 0.7).mean() > 0.1
  # Mostly upright, some strongly rotated (neck-to-pelvis direction).
  full = labelled[:, [5, 6, 11, 12]].all(1)
  spine = (kp[full][:, [11, 12], :2].mean(1) -
           kp[full][:, [5, 6], :2].mean(1))
  tilt = np.degrees(np.abs(np.arctan2(spine[:, 0], spine[:, 1])))
  assert (tilt < 20).mean() > 0.5 and (tilt > 40).mean() > 0.03, tilt
  # Frontal faces and back views both occur.
  face_seen = (v[:, 1:3] == 2).sum(1)
  assert (face_seen == 2).mean() > 0.15 and (face_seen == 0).mean() > 0.1
  # All parts occur, heads are small and torsos large.
  parts = np.bincount(np.concatenate([ex['part_map'].ravel()
                                      for ex in samples]), minlength=7)
  assert (parts > 0).all()
  assert parts[1] < parts[2]
  assert all(ex['image'].std() > 10 for ex in samples)


@pytest.fixture(scope='module')
def many_scenes():
  """Geometry only (no pixels) of enough people for rarer statistics."""
  ds = synthetic.SyntheticPeople(300, seed=12, image_size=(H, W))
  return [ds.scene(i) for i in range(len(ds))]


def test_far_side_limbs_go_behind_the_body(many_scenes):
  """Depth order: seen side-on, the far arm is hidden far more often."""
  hidden = {'far': [], 'near': []}
  for scene in many_scenes:
    v = scene.annotation['keypoints'][..., 2]
    for p in range(len(v)):
      for side, other in (('left', 'right'), ('right', 'left')):
        if not scene.turned_away[p, NAMES.index(f'{side}_shoulder')]:
          continue
        for joint in ('elbow', 'wrist'):
          for which, s in (('far', side), ('near', other)):
            vj = v[p, NAMES.index(f'{s}_{joint}')]
            if vj > 0:
              hidden[which].append(vj == 1)
  far, near = np.mean(hidden['far']), np.mean(hidden['near'])
  assert min(len(hidden['far']), len(hidden['near'])) > 100
  assert far > near + 0.2, (far, near)


def test_some_people_are_upside_down(many_scenes):
  kp = np.concatenate([s.annotation['keypoints'] for s in many_scenes])
  full = (kp[:, [5, 6, 11, 12], 2] > 0).all(1)
  spine = (kp[full][:, [11, 12], :2].mean(1) -
           kp[full][:, [5, 6], :2].mean(1))
  tilt = np.degrees(np.abs(np.arctan2(spine[:, 0], spine[:, 1])))
  assert 0.01 < (tilt > 110).mean() < 0.1, (tilt > 110).mean()


def test_empty_images_and_other_sizes():
  ds = synthetic.SyntheticPeople(3, seed=1, image_size=(64, 96), min_people=0,
                                 max_people=0)
  ex = ds[0]
  assert ex['keypoints'].shape == (0, 17, 3)
  assert ex['person_masks'].shape == (0, 64, 96)
  assert ex['image'].shape == (64, 96, 3)
  assert (ex['part_map'] == 0).all()
  many = synthetic.SyntheticPeople(2, seed=1, min_people=8, max_people=8)
  assert len(many[0]['keypoints']) >= 6


@pytest.mark.parametrize('kwargs', [
    dict(num_images=-1), dict(num_images=2, min_people=3, max_people=2),
    dict(num_images=2, image_size=(4, 4)),
    dict(num_images=2, person_height=(0.0, 1.0))])
def test_bad_arguments_raise(kwargs):
  with pytest.raises(ValueError):
    synthetic.SyntheticPeople(**kwargs)


def read_tree(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes()
          for p in sorted(root.rglob('*')) if p.is_file()}


def test_export_is_byte_identical_for_the_same_seed(tmp_path):
  synthetic.export(str(tmp_path / 'a'), 3, seed=9, image_size=(H, W))
  synthetic.export(str(tmp_path / 'b'), 3, seed=9, image_size=(H, W))
  a, b = read_tree(tmp_path / 'a'), read_tree(tmp_path / 'b')
  assert sorted(a) == ['annotations.json', 'images/000000000001.jpg',
                       'images/000000000002.jpg', 'images/000000000003.jpg',
                       'parts/000000000001.png', 'parts/000000000002.png',
                       'parts/000000000003.png']
  assert a == b
  synthetic.export(str(tmp_path / 'c'), 3, seed=10, image_size=(H, W))
  assert read_tree(tmp_path / 'c') != a


def test_export_round_trips_through_pycocotools(tmp_path):
  synthetic.export(str(tmp_path), 4, seed=9, image_size=(H, W))
  ds = synthetic.SyntheticPeople(4, seed=9, image_size=(H, W))
  coco = coco_lib.COCO(str(tmp_path / 'annotations.json'))
  cat = coco.loadCats([1])[0]
  assert cat['name'] == 'person' and cat['keypoints'] == list(NAMES)
  assert sorted(map(tuple, cat['skeleton'])) == sorted(
      (NAMES.index(a) + 1, NAMES.index(b) + 1)
      for a, b in skeletons.COCO17.limbs)
  assert sorted(coco.getImgIds()) == [1, 2, 3, 4]
  ann_ids = set()
  for i in range(4):
    ex = ds[i]
    info = coco.loadImgs([i + 1])[0]
    assert (info['height'], info['width']) == (H, W)
    image = cv2.imread(str(tmp_path / 'images' / info['file_name']))
    assert image.shape == (H, W, 3)
    # JPEG is lossy but close.
    error = np.abs(image[..., ::-1].astype(int) - ex['image']).mean()
    assert error < 8, error
    parts = cv2.imread(
        str(tmp_path / 'parts' / info['file_name'].replace('.jpg', '.png')),
        cv2.IMREAD_UNCHANGED)
    assert parts.dtype == np.uint8
    np.testing.assert_array_equal(parts, ex['part_map'])
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[i + 1]))
    assert len(anns) == len(ex['keypoints'])
    for p, ann in enumerate(sorted(anns, key=lambda a: a['id'])):
      ann_ids.add(ann['id'])
      assert ann['category_id'] == 1 and ann['iscrowd'] == 0
      np.testing.assert_array_equal(coco.annToMask(ann), ex['person_masks'][p])
      kp = np.array(ann['keypoints'], np.float32).reshape(17, 3)
      np.testing.assert_array_equal(kp, ex['keypoints'][p])
      assert ann['num_keypoints'] == (ex['keypoints'][p, :, 2] > 0).sum()
      x1, y1, x2, y2 = ex['boxes'][p]
      assert ann['bbox'] == [x1, y1, x2 - x1, y2 - y1]
      assert ann['area'] == ex['person_masks'][p].sum()
  raw = json.loads((tmp_path / 'annotations.json').read_text())
  ids = [a['id'] for a in raw['annotations']]
  assert ids == list(range(1, len(ids) + 1)) and set(ids) == ann_ids


def test_command_line_export_matches_python_export(tmp_path):
  env = dict(os.environ)
  root = pathlib.Path(synthetic.__file__).resolve().parents[3]
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(root),
                                                    env.get('PYTHONPATH')]))
  subprocess.run(
      [sys.executable, '-m', 'hpe_jax.data.synthetic',
       f'--output={tmp_path / "cli"}', '--num_images=2', '--seed=4',
       '--image_size=64,80', '--max_people=2'],
      check=True, env=env, cwd=root, capture_output=True)
  synthetic.export(str(tmp_path / 'py'), 2, seed=4, image_size=(64, 80),
                   max_people=2)
  assert read_tree(tmp_path / 'cli') == read_tree(tmp_path / 'py')
  coco = json.loads((tmp_path / 'cli' / 'annotations.json').read_text())
  assert [im['file_name'] for im in coco['images']] == [
      '000000000001.jpg', '000000000002.jpg']
  image = cv2.imread(str(tmp_path / 'cli' / 'images' / '000000000001.jpg'))
  assert image.shape == (64, 80, 3)


def test_export_loads_through_the_coco_reader_of_the_configs(tmp_path):
  synthetic.export(str(tmp_path), 5, seed=3, image_size=(H, W))
  made = synthetic.SyntheticPeople(5, seed=3, image_size=(H, W))
  cfg = datasets.default_config()
  cfg.name, cfg.root = 'coco', str(tmp_path)
  cfg.coco.train_annotations = 'annotations.json'
  cfg.coco.train_images = 'images'
  cfg.coco.parts_dir = 'parts'
  read = datasets.build(cfg, 'train')
  assert len(read) == 5 and read.part_schema == skeletons.BODY_PARTS6
  for i in range(5):
    a, b = made[i], read[i]
    for key in ('image_id', 'height', 'width', 'keypoints', 'boxes',
                'is_crowd', 'person_masks', 'part_map'):
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert np.abs(a['image'].astype(int) - b['image']).mean() < 8
