"""The Grain input pipeline on a small dataset with known geometry.

`FakePeople` draws a bright blob at each person's left wrist and labels the
left half of every person box as CIHP "left_arm" and the right half as
"right_arm", so a test can see whether image, keypoints, masks and part maps
moved together through crops, rotations and mirrors.
"""

import logging

import jax
import ml_collections
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax.codecs import heatmap as heatmaps
from hpe_jax.data import augment
from hpe_jax.data import example
from hpe_jax.data import pipeline
from hpe_jax.data import skeletons
from hpe_jax.data import top_down
from hpe_jax.data import warp

H, W = 96, 128
LEFT_WRIST = skeletons.COCO17.index('left_wrist')
RIGHT_WRIST = skeletons.COCO17.index('right_wrist')
LEFT_ARM = skeletons.CIHP20.label_names.index('left_arm')
RIGHT_ARM = skeletons.CIHP20.label_names.index('right_arm')


class FakePeople(example.ImageDataset):
  name = 'fake'
  skeleton = skeletons.COCO17
  part_schema = skeletons.CIHP20
  has_masks = True

  def __init__(self, num_images, damaged=()):
    self.num_images = num_images
    self.damaged = set(damaged)

  def __len__(self):
    return self.num_images

  def annotation(self, index):
    rng = np.random.default_rng(index)
    people = 1 + index % 3
    x1 = rng.uniform(5, 60, people)
    y1 = rng.uniform(5, 30, people)
    w = rng.uniform(20, 50, people)
    h = rng.uniform(40, 60, people)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], -1).astype(np.float32)
    kp = np.zeros((people, 17, 3), np.float32)
    kp[..., 0] = x1[:, None] + rng.uniform(0.6, 0.9, (people, 17)) * w[:,
                                                                       None]
    kp[..., 1] = y1[:, None] + rng.uniform(0.1, 0.9, (people, 17)) * h[:,
                                                                       None]
    kp[..., 2] = rng.choice([0, 1, 2], (people, 17), p=[0.1, 0.1, 0.8])
    # The left wrist sits in the left half of the box, on the left arm.
    kp[:, LEFT_WRIST] = np.stack([x1 + 0.25 * w, y1 + 0.5 * h,
                                  np.full(people, 2)], -1)
    return dict(image_id=index + 1, image_path=f'fake/{index}.jpg', height=H,
                width=W, keypoints=kp, boxes=boxes,
                head_boxes=np.full((people, 4), np.nan, np.float32),
                is_crowd=np.zeros(people, bool))

  def load_pixels(self, index, annotation):
    if index in self.damaged:
      raise example.DamagedSampleError(f'fake/{index}.jpg', 'broken JPEG')
    ys, xs = np.mgrid[:H, :W]
    wx, wy = annotation['keypoints'][0, LEFT_WRIST, :2]
    blob = 255 * np.exp(-((xs - wx) ** 2 + (ys - wy) ** 2) / (2 * 2.0**2))
    image = np.repeat(blob[..., None], 3, -1).astype(np.uint8)
    people = len(annotation['boxes'])
    masks = np.zeros((people, H, W), np.uint8)
    parts = np.zeros((H, W), np.uint8)
    for p, (x1, y1, x2, y2) in enumerate(annotation['boxes']):
      inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
      masks[p][inside & (parts == 0)] = 1
      left = inside & (xs < (x1 + x2) / 2) & (parts == 0)
      right = inside & (xs >= (x1 + x2) / 2) & (parts == 0)
      parts[left] = LEFT_ARM
      parts[right] = RIGHT_ARM
    return dict(image=image, person_masks=masks, part_map=parts)


def input_config(**overrides):
  cfg = pipeline.default_config()
  cfg.image_size = (64, 48)
  cfg.output_stride = 2
  cfg.num_threads = 1
  off = dict(flip=0.0, scale=(1.0, 1.0), shift=0.0, rotation=0.0,
             half_body_prob=0.0, brightness=0.0, contrast=0.0,
             saturation=0.0, noise_std=0.0, blur_sigma=0.0)
  cfg.augment.update(off)
  for key, value in overrides.items():
    target = cfg.augment if key in off or key in cfg.augment else cfg
    setattr(target, key, value)
  return cfg


def to_input(xy, stride):
  return (xy + 0.5) * stride - 0.5


def blob_centroid(image):
  gray = image[..., 0].astype(np.float64)
  gray = np.where(gray > 20, gray, 0)
  ys, xs = np.mgrid[:image.shape[0], :image.shape[1]]
  return np.array([(xs * gray).sum(), (ys * gray).sum()]) / gray.sum()


@pytest.mark.parametrize('flip', [False, True])
def test_image_keypoints_masks_and_parts_move_together(flip):
  ds = FakePeople(6)
  cfg = input_config(flip=float(flip), rotation=35.0, rotation_prob=1.0,
                     scale=(0.9, 1.1), shift=0.05, shift_prob=1.0)
  build = pipeline.sample_builder(ds, cfg, train=True)
  wrist = RIGHT_WRIST if flip else LEFT_WRIST
  arm = RIGHT_ARM if flip else LEFT_ARM
  for i in range(6):
    rec = top_down.PersonRecord(i, 0, tuple(ds.annotation(i)['boxes'][0]))
    s = build(rec, np.random.default_rng(i))
    xy = s['keypoints'][wrist, :2]
    # The mirrored left wrist is labelled as the right one, and the image's
    # blob, the mask and the (swapped) arm label are where it says.
    np.testing.assert_allclose(blob_centroid(s['image']),
                               to_input(xy, cfg.output_stride), atol=0.6)
    col, row = np.round(xy).astype(int)
    assert s['mask'][row, col] == 1
    assert s['part_map'][row, col] == arm
    back = np.linalg.solve(
        np.vstack([s['affine'], [0, 0, 1]]), [*xy, 1])[:2]
    np.testing.assert_allclose(
        back, ds.annotation(i)['keypoints'][0, LEFT_WRIST, :2], atol=1e-3)


def test_all_augmentations_off_equals_evaluation_crop():
  ds = FakePeople(3)
  cfg = input_config()
  train = pipeline.sample_builder(ds, cfg, train=True)
  evaluate = pipeline.sample_builder(ds, cfg, train=False)
  rec = top_down.PersonRecord(2, 1, tuple(ds.annotation(2)['boxes'][1]))
  a, b = train(rec, np.random.default_rng(0)), evaluate(rec)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_each_photometric_augmentation_changes_only_pixels():
  image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
  off = input_config().augment
  assert (augment.photometric(np.random.default_rng(0), image, off) ==
          image).all()
  for field in ('brightness', 'contrast', 'saturation', 'noise_std',
                'blur_sigma'):
    cfg = ml_collections.ConfigDict(off.to_dict())
    setattr(cfg, field, 0.5)
    cfg.color_prob = cfg.noise_prob = cfg.blur_prob = 1.0
    out = augment.photometric(np.random.default_rng(1), image, cfg)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out != image).any(), field


def test_half_body_crop_covers_one_half_of_the_body():
  kp = np.zeros((17, 3), np.float32)
  kp[:, 0] = np.linspace(40, 60, 17)
  kp[:, 1] = np.where(skeletons.COCO17.lower_body, 150, 50) + np.arange(17)
  kp[:, 2] = 2
  box = (30, 40, 70, 180)
  cfg = input_config(half_body_prob=1.0, half_body_min_joints=8).augment
  full = augment.sample_crop(None, box, kp, skeletons.COCO17, 0.75, 1.25,
                             None)
  for seed in range(8):
    crop = augment.sample_crop(np.random.default_rng(seed), box, kp,
                               skeletons.COCO17, 0.75, 1.25, cfg)
    assert crop.size[1] < full.size[1]
    lower = skeletons.COCO17.lower_body
    inside = np.abs(kp[:, 1] - crop.center[1]) < crop.size[1] / 2
    assert inside[lower].all() != inside[~lower].all()


def take(it, n):
  it = iter(it)
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  for x, y in zip(a, b):
    jax.tree.map(np.testing.assert_array_equal, x, y)


def test_training_batches_are_fixed_by_the_seed_and_restorable():
  ds = FakePeople(10)
  cfg = input_config(flip=0.5, rotation=30.0, rotation_prob=0.5,
                     brightness=0.3, color_prob=0.5)
  make = lambda seed: pipeline.train_dataset(ds, cfg, seed=seed,
                                             batch_size=4)
  first = take(make(3), 5)
  assert_batches_equal(first, take(make(3), 5))
  assert not np.array_equal(first[0]['image'], take(make(4), 1)[0]['image'])
  assert all(b['image'].shape == (4, 64, 48, 3) for b in first)

  it = iter(make(3))
  take(it, 2)
  state = it.get_state()
  expected = take(it, 3)
  resumed = iter(make(3))
  resumed.set_state(state)
  assert_batches_equal(expected, take(resumed, 3))


def test_worker_processes_give_the_same_batches():
  ds = FakePeople(8)
  cfg = input_config(flip=0.5, rotation=30.0, rotation_prob=0.5)
  plain = take(pipeline.train_dataset(ds, cfg, seed=1, batch_size=4), 3)
  cfg.num_workers = 2
  workers = take(pipeline.train_dataset(ds, cfg, seed=1, batch_size=4), 3)
  assert_batches_equal(plain, workers)


def test_damaged_samples_are_skipped_counted_and_logged(caplog):
  ds = FakePeople(6, damaged={1})
  cfg = input_config()
  with caplog.at_level(logging.WARNING):
    batches = take(pipeline.train_dataset(ds, cfg, seed=0, batch_size=4), 6)
  ids = np.concatenate([b['image_id'] for b in batches])
  damaged = np.concatenate([b['damaged'] for b in batches])
  assert 2 not in ids and {1, 3, 4, 5, 6} <= set(ids)
  # The 24 examples span two passes over the 12 people; each pass skips
  # the 2 of image index 1, counted by the next good sample.
  people = [len(ds.annotation(i)['boxes']) for i in range(6)]
  assert damaged.sum() >= people[1] and set(damaged) <= {0, 1, 2}
  assert 'fake/1.jpg' in caplog.text and 'broken JPEG' in caplog.text

  it, count = pipeline.eval_dataset(ds, cfg, batch_size=4)
  batches = list(it)
  valid = np.concatenate([b['valid'] for b in batches])
  damaged = np.concatenate([b['damaged'] for b in batches])
  assert count == sum(people)
  assert valid.sum() == count - people[1]
  assert damaged.sum() == people[1] and not (valid & (damaged > 0)).any()


@pytest.mark.parametrize('workers', [0, 2])
def test_a_dataset_of_damaged_samples_stops_with_one_error(workers):
  ds = FakePeople(40, damaged=range(40))
  cfg = input_config(num_workers=workers, max_consecutive_damaged=20)
  with pytest.raises(errors.DataError,
                     match=r'20 damaged samples in a row.*fake/\d+.jpg: '
                     'broken JPEG'):
    next(iter(pipeline.train_dataset(ds, cfg, seed=0, batch_size=4)))
  with pytest.raises(errors.DataError, match='in a row'):
    list(pipeline.eval_dataset(ds, cfg, batch_size=4)[0])


def test_a_dataset_without_training_examples_says_so():
  cfg = input_config(min_keypoints=100)
  with pytest.raises(errors.DataError, match='no training examples'):
    pipeline.train_dataset(FakePeople(3), cfg, seed=0, batch_size=4)


class Unlabelled(FakePeople):
  """FakePeople whose people have no labelled joint; masks as `has_masks`."""

  def __init__(self, num_images, has_masks=True):
    super().__init__(num_images)
    self.has_masks = has_masks

  def annotation(self, index):
    ann = super().annotation(index)
    ann['keypoints'][..., 2] = 0
    return ann


@pytest.mark.parametrize('mode', pipeline.MODES)
def test_training_data_without_a_label_the_task_needs_stops(mode):
  cfg = input_config(mode=mode, min_keypoints=0)
  labels = ('keypoints', 'person_masks', 'part_map')
  next(iter(pipeline.train_dataset(FakePeople(3), cfg, seed=0,
                                   batch_size=2, labels=labels)))
  # Only the labels the task names are checked.
  pipeline.train_dataset(Unlabelled(3), cfg, seed=0, batch_size=2,
                         labels=('person_masks',))
  with pytest.raises(errors.DataError, match=(
      r'^fake: 0 people with keypoints; keypoint recipes need keypoints '
      r'\(mask recipes can use its person masks\)$')):
    pipeline.train_dataset(Unlabelled(3), cfg, seed=0, batch_size=2,
                           labels=('keypoints',))
  with pytest.raises(errors.DataError,
                     match='people with keypoints; keypoint recipes need '
                     'keypoints$'):
    pipeline.train_dataset(Unlabelled(3, has_masks=False), cfg, seed=0,
                           batch_size=2, labels=('keypoints',))
  with pytest.raises(errors.DataError, match='^fake: 0 people with masks'):
    pipeline.train_dataset(Unlabelled(3, has_masks=False), cfg, seed=0,
                           batch_size=2, labels=('person_masks',))
  no_parts = FakePeople(3)
  no_parts.part_schema = None
  with pytest.raises(errors.DataError, match='^fake: no part maps'):
    pipeline.train_dataset(no_parts, cfg, seed=0, batch_size=2,
                           labels=('part_map',))


def test_process_shares_make_the_single_process_batches():
  ds = FakePeople(7)
  cfg = input_config()
  whole = take(pipeline.train_dataset(ds, cfg, seed=3, batch_size=6), 4)
  shares = [take(pipeline.train_dataset(ds, cfg, seed=3, batch_size=3,
                                        shard_index=i, shard_count=2), 4)
            for i in range(2)]
  for b, global_batch in enumerate(whole):
    for key in ('image', 'image_id', 'person_index', 'keypoints'):
      np.testing.assert_array_equal(
          np.concatenate([shares[0][b][key], shares[1][b][key]]),
          global_batch[key], err_msg=f'batch {b} {key}')
  # Each process read different examples.
  assert not np.array_equal(shares[0][0]['image'], shares[1][0]['image'])
  cfg.num_workers = 2
  assert_batches_equal(shares[1], take(pipeline.train_dataset(
      ds, cfg, seed=3, batch_size=3, shard_index=1, shard_count=2), 4))


def test_evaluation_counts_every_person_once_across_shards():
  ds = FakePeople(7)
  cfg = input_config()
  expected = {(i + 1, p) for i in range(7)
              for p in range(len(ds.annotation(i)['boxes']))}
  seen, batches = [], []
  for shard in range(2):
    it, count = pipeline.eval_dataset(ds, cfg, batch_size=3,
                                      shard_index=shard, shard_count=2)
    shard_batches = list(it)
    batches.append(len(shard_batches))
    for b in shard_batches:
      assert b['image'].shape[0] == 3
      seen += [(int(i), int(p)) for i, p, v in
               zip(b['image_id'], b['person_index'], b['valid']) if v]
  assert count == len(expected)
  assert batches[0] == batches[1]
  assert sorted(seen) == sorted(expected)


def test_full_image_samples_pad_people_and_keep_the_largest():
  ds = FakePeople(6)
  cfg = input_config(mode='full_image', max_people=2)
  cfg.image_size = (48, 64)
  build = pipeline.sample_builder(ds, cfg, train=False)
  ann = ds.annotation(2)  # three people
  s = build(2)
  areas = np.prod(ann['boxes'][:, 2:] - ann['boxes'][:, :2], -1)
  largest = np.argsort(-areas)[:2]
  assert s['person_valid'].tolist() == [True, True]
  np.testing.assert_array_equal(s['gt_boxes'], ann['boxes'][largest])
  assert s['keypoints'].shape == (2, 17, 3)
  assert set(np.unique(s['instance_map'])) <= {0, 1, 2}
  np.testing.assert_array_equal(s['mask'], s['instance_map'] > 0)
  one = build(0)  # one person: the second slot is padding
  assert one['person_valid'].tolist() == [True, False]
  assert (one['keypoints'][1] == 0).all()
  # The whole 128x96 image fits the 64x48 input: boxes scale by one half.
  np.testing.assert_allclose(one['boxes'][0], ds.annotation(0)['boxes'][0] /
                             2 - 0.25, atol=1e-4)


class OverlappingPeople(FakePeople):
  """Whole boxes as masks, so people overlap."""

  def load_pixels(self, index, annotation):
    out = super().load_pixels(index, annotation)
    ys, xs = np.mgrid[:H, :W]
    out['person_masks'] = np.stack([
        (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
        for x1, y1, x2, y2 in annotation['boxes']]).astype(np.uint8)
    return out


def test_full_image_instance_map_gives_overlaps_to_the_smaller_person():
  ds = OverlappingPeople(6)
  cfg = input_config(mode='full_image', max_people=3)
  cfg.image_size = (H, W)
  cfg.output_stride = 1
  build = pipeline.sample_builder(ds, cfg, train=False)
  checked = 0
  for i in range(6):
    s, ex = build(i), ds[i]
    masks = ex['person_masks'] > 0
    areas = masks.sum((1, 2))
    slot_of = {p: slot for slot, p in enumerate(np.argsort(-areas,
                                                           kind='stable'))}
    for y, x in zip(*np.nonzero(masks.sum(0) > 1)):
      owners = np.flatnonzero(masks[:, y, x])
      smallest = owners[np.argmin(areas[owners])]
      assert s['instance_map'][y, x] == slot_of[smallest] + 1
      checked += 1
  assert checked > 100


def test_heatmap_targets_of_a_batch_peak_at_its_keypoints():
  ds = FakePeople(8)
  cfg = input_config(flip=0.5, rotation=30.0, rotation_prob=1.0)
  batch = take(pipeline.train_dataset(ds, cfg, seed=2, batch_size=8), 1)[0]
  size = warp.Geometry(tuple(cfg.image_size), cfg.output_stride).output_size
  kp = batch['keypoints']
  heat, weights = heatmaps.heatmap_targets(kp[..., :2], kp[..., 2], size, 1.5)
  heat, weights = np.asarray(heat), np.asarray(weights)
  assert weights.sum() > 20
  for b, k in zip(*np.nonzero(weights)):
    row, col = np.unravel_index(heat[b, ..., k].argmax(), size)
    assert abs(col - kp[b, k, 0]) <= 0.5 and abs(row - kp[b, k, 1]) <= 0.5
