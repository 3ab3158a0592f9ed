"""Tests of the synthetic video sequences, their ground truth and export."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hpe_jax.data import coco
from hpe_jax.data import skeletons
from hpe_jax.data import synthetic
from hpe_jax.data import video as video_io
from hpe_jax.data.synthetic import body
from hpe_jax.data.synthetic import materials
from hpe_jax.data.synthetic import pixels
from hpe_jax.data.synthetic import render
from hpe_jax.data.synthetic import scene as scene_lib
from hpe_jax.data.synthetic import video as synthetic_video

H, W = 64, 96
NAMES = skeletons.COCO17.joint_names
PARTS = skeletons.BODY_PARTS6.label_names


def digest(*arrays) -> str:
  h = hashlib.sha256()
  for a in arrays:
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()[:16]


# SyntheticPeople samples as drawn before the body and pixel code were split
# for video: the image's mean value (pixel values may differ in the last bit
# between CPUs' vector code for blurs, so not a digest) and the sha256
# prefix of keypoints, boxes, head boxes, masks and part map.
STILL_HASHES = [
    (0, (96, 128), {}, 0, 142.212, '5012b1512c706964'),
    (0, (96, 128), {}, 1, 66.566, '97a9ab982d4ae60d'),
    (0, (96, 128), {}, 2, 86.244, 'cb0af9c4deeab7ed'),
    (0, (96, 128), {}, 3, 94.712, '4f534d1e6ae852a0'),
    (7, (64, 64), dict(occluder_prob=1.0, max_people=4), 5,
     119.033, '4fd7e32a221b61eb'),
    (7, (64, 64), dict(occluder_prob=1.0, max_people=4), 11,
     108.249, '4f147c5f7662ca2f'),
    (3, (80, 96), dict(person_height=(0.45, 0.8)), 0, 76.014,
     '492ca448da2f7e58'),
    (3, (80, 96), dict(person_height=(0.45, 0.8)), 4, 70.76,
     'e0aaa3486fd2755e'),
]


@pytest.mark.parametrize('seed,size,kwargs,index,image_mean,truth_hash',
                         STILL_HASHES)
def test_still_images_are_unchanged(seed, size, kwargs, index, image_mean,
                                    truth_hash):
  ex = synthetic.SyntheticPeople(20, seed=seed, image_size=size, **kwargs)[
      index]
  assert abs(ex['image'].astype(np.float64).mean() - image_mean) < 0.01
  assert digest(ex['keypoints'], ex['boxes'], ex['head_boxes'],
                ex['person_masks'], ex['part_map']) == truth_hash


def frames_of(video):
  return [video.frame(i) for i in range(len(video))]


def tracks_of(frames):
  """{track id: {frame number: keypoints}}."""
  tracks = {}
  for f in frames:
    for tid, kp in zip(f['track_ids'], f['keypoints']):
      tracks.setdefault(int(tid), {})[f['frame_index']] = kp
  return tracks


@pytest.fixture(scope='module')
def moving():
  """Frames of a few sequences with pan, zoom and occluders."""
  return [frames_of(synthetic_video.SyntheticVideo(
      12, seed=s, image_hw=(H, W), num_people=(2, 3))) for s in range(3)]


def test_same_arguments_give_the_same_frames():
  a = synthetic_video.SyntheticVideo(5, seed=4, image_hw=(H, W))
  b = synthetic_video.SyntheticVideo(5, seed=4, image_hw=(H, W))
  other = synthetic_video.SyntheticVideo(5, seed=4, index=1, image_hw=(H, W))
  for i in (0, 4, 2):
    fa, fb = a.frame(i), b.frame(i)
    assert fa.keys() == fb.keys()
    for k in fa:
      np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
  assert not np.array_equal(a.frame(0)['image'], other.frame(0)['image'])
  # Frames differ from each other too: the sensor noise at least.
  assert not np.array_equal(a.frame(0)['image'], a.frame(1)['image'])


def test_ground_truth_contract(moving):
  for frames in moving:
    for f in frames:
      p = len(f['track_ids'])
      assert f['image'].dtype == np.uint8 and f['image'].shape == (H, W, 3)
      assert f['track_ids'].dtype == np.int64
      assert len(set(f['track_ids'].tolist())) == p
      assert (np.diff(f['track_ids']) > 0).all()
      assert f['keypoints'].dtype == np.float32
      assert f['keypoints'].shape == (p, 17, 3)
      assert f['boxes'].shape == f['head_boxes'].shape == (p, 4)
      assert f['person_masks'].dtype == np.uint8
      assert f['person_masks'].shape == (p, H, W)
      assert f['part_map'].dtype == np.uint8 and f['part_map'].shape == (H, W)
      assert f['camera'].shape == (2, 3)


def test_masks_part_map_boxes_and_visibility_agree(moving):
  counts = np.zeros(3, int)
  for frames in moving:
    for f in frames:
      masks = f['person_masks'].astype(int)
      assert masks.sum(0).max() <= 1, 'masks overlap'
      np.testing.assert_array_equal(masks.sum(0) > 0, f['part_map'] > 0)
      # Listed people have pixels, and every person pixel is listed.
      assert (masks.sum((1, 2)) > 0).all()
      for mask, box in zip(masks, f['boxes']):
        ys, xs = np.nonzero(mask)
        np.testing.assert_array_equal(
            box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
      for p, kp in enumerate(f['keypoints']):
        for j, (x, y, v) in enumerate(kp):
          counts[int(v)] += 1
          if v == 0:
            assert x == y == 0
            continue
          c, r = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
          assert 0 <= c < W and 0 <= r < H
          if v == 2:
            # A visible joint lies on its own person and a part it borders.
            assert masks[p, r, c] == 1, NAMES[j]
            assert PARTS[f['part_map'][r, c]] in allowed_parts(NAMES[j])
      for box, kp in zip(f['head_boxes'], f['keypoints']):
        if np.isnan(box).any():
          assert np.isnan(box).all() and (kp[:5, 2] == 0).all()
        else:
          seen = kp[:5][kp[:5, 2] == 2]
          assert (seen[:, 0] + 0.5 >= box[0]).all()
          assert (seen[:, 0] + 0.5 <= box[2]).all()
          assert (seen[:, 1] + 0.5 >= box[1]).all()
          assert (seen[:, 1] + 0.5 <= box[3]).all()
  assert counts.min() > 20, counts


def allowed_parts(joint: str) -> set[str]:
  if joint in ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear'):
    return {'head'}
  return {
      'shoulder': {'torso', 'upper_arms'}, 'elbow': {'upper_arms',
                                                    'lower_arms'},
      'wrist': {'lower_arms'}, 'hip': {'torso', 'upper_legs'},
      'knee': {'upper_legs', 'lower_legs'}, 'ankle': {'lower_legs'},
  }[joint.split('_', 1)[1]]


def test_keypoints_move_smoothly_without_pan():
  """Joints labelled in consecutive frames move a bounded distance, and
  walkers do move."""
  walked = []
  for seed in range(4):
    video = synthetic_video.SyntheticVideo(16, seed=seed, image_hw=(H, W),
                                           pan=False, zoom=False)
    for track in tracks_of(frames_of(video)).values():
      steps = []
      for t in sorted(track):
        if t + 1 in track:
          a, b = track[t], track[t + 1]
          both = (a[:, 2] > 0) & (b[:, 2] > 0)
          steps += list(np.linalg.norm(b[both, :2] - a[both, :2], axis=1))
      if steps:
        # Walking at up to 0.9 body heights a second at 25 fps.
        assert max(steps) < 0.1 * H, max(steps)
        walked.append(np.mean(steps))
  assert max(walked) > 1.0, walked


def test_the_camera_maps_world_to_frame():
  """Pan and zoom move image, masks and joints by the same affine map.

  The world does not depend on the camera, so a fixed camera's frame (a
  crop of the world) mapped by the moving camera's transform must match
  the moving camera's frame.
  """
  kw = dict(num_frames=12, seed=1, image_hw=(H, W), num_people=(2, 3))
  panned = synthetic_video.SyntheticVideo(**kw)
  fixed = synthetic_video.SyntheticVideo(**kw, pan=False, zoom=False)
  scales, joints = [], 0
  for i in (0, 5, 11):
    a, b = panned.frame(i), fixed.frame(i)
    m = b['camera']
    np.testing.assert_array_equal(m[:, :2], np.eye(2))
    assert (m[:, 2] == np.round(m[:, 2])).all() and (m[:, 2] < 0).all()
    scales.append(a['camera'][0, 0])
    # Frame of the fixed camera -> frame of the moving one.
    to_a = a['camera'] @ np.vstack([np.hstack([np.eye(2), -m[:, 2:]]),
                                    [0, 0, 1]])
    for p, tid in enumerate(a['track_ids']):
      if tid not in b['track_ids']:
        continue
      q = list(b['track_ids']).index(tid)
      both = (a['keypoints'][p, :, 2] > 0) & (b['keypoints'][q, :, 2] > 0)
      expect = b['keypoints'][q, both, :2] @ to_a[:, :2].T + to_a[:, 2]
      np.testing.assert_allclose(a['keypoints'][p, both, :2], expect,
                                 atol=1e-3)
      joints += both.sum()
    # Part map and image: pull the fixed frame through the inverse map.
    inverse = cv2.invertAffineTransform(to_a)
    xs, ys = np.meshgrid(np.arange(W), np.arange(H))
    src = np.stack([xs, ys], -1) @ inverse[:, :2].T + inverse[:, 2]
    ij = np.floor(src + 0.5).astype(int)
    inside = ((ij >= 0) & (ij < [W, H])).all(-1)
    pulled = b['part_map'][ij[..., 1].clip(0, H - 1), ij[..., 0].clip(0, W - 1)]
    agree = (pulled == a['part_map'])[inside].mean()
    assert agree > 0.99, agree
    warped = cv2.warpAffine(b['image'].astype(np.float32), to_a, (W, H))
    error = np.abs(warped - a['image'])[inside].mean()
    wrong = np.abs(np.roll(warped, 5, 1) - a['image'])[inside].mean()
    assert error < 0.5 * wrong and error < 12, (error, wrong)
  assert joints > 20
  assert max(scales) > 1.01 and min(scales) >= 1.0


def test_frames_are_the_world_seen_through_the_camera():
  """Keypoints, part map and image of a frame are the world's (posed,
  rasterised and painted here) mapped by the frame's `camera`."""
  video = synthetic_video.SyntheticVideo(8, seed=2, image_hw=(H, W),
                                         num_people=(2, 3))
  # pylint: disable=protected-access
  for i in (0, 7):
    f = video.frame(i)
    a = f['camera']
    assert a[0, 0] > 1.01  # zoomed in: no plain crop
    people, occluders, frames = video.world(f['frame_index'])
    world = {int(t): p.keypoints for t, p in zip(video._track_ids, people)}
    for tid, kp in zip(f['track_ids'], f['keypoints']):
      on = kp[:, 2] > 0
      np.testing.assert_allclose(
          kp[on, :2], world[int(tid)][on] @ a[:, :2].T + a[:, 2], atol=1e-3)
    owner = render.rasterise(video.world_hw, people, occluders)
    part_of = np.zeros(owner.max() + 1, np.uint8)
    part_of[render.FIRST_PERSON_ID:] = np.tile(
        body.PRIMITIVE_PART, len(people))[:len(part_of) -
                                          render.FIRST_PERSON_ID]
    # Each frame pixel takes the world pixel nearest to where it maps from.
    inverse = cv2.invertAffineTransform(a)
    xs, ys = np.meshgrid(np.arange(W), np.arange(H))
    ij = np.floor(np.stack([xs, ys], -1) @ inverse[:, :2].T + inverse[:, 2] +
                  0.5).astype(int)
    pulled = part_of[owner[ij[..., 1], ij[..., 0]]]
    assert (pulled == f['part_map']).mean() > 0.995
    painted = pixels.paint(video._appearance, owner, frames,
                           pixels.workspace(*video.world_hw),
                           video._noise_frames(frames))
    errors = {}
    for dx, dy in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)):
      shifted = a + [[0, 0, dx], [0, 0, dy]]
      seen = cv2.warpAffine(painted, shifted, (W, H), flags=cv2.INTER_LINEAR)
      if video._blur:
        seen = cv2.GaussianBlur(seen, (0, 0), video._blur)
      errors[dx, dy] = np.abs(seen - f['image']).mean()
    aligned = errors.pop((0, 0))
    assert aligned < 6 and aligned < 0.8 * min(errors.values()), (aligned,
                                                                  errors)


def test_people_leave_and_new_people_enter_with_new_track_ids():
  left = entered = None
  for seed in range(10):
    video = synthetic_video.SyntheticVideo(
        40, seed=seed, image_hw=(H, W), pan=False, zoom=False,
        occluders=False)
    frames = frames_of(video)
    boxes = {}  # track id -> {frame: box}
    for f in frames:
      for tid, box in zip(f['track_ids'], f['boxes']):
        boxes.setdefault(int(tid), {})[f['frame_index']] = box
    for tid, track in boxes.items():
      first, last = min(track), max(track)
      # A track is one stretch of frames here: nobody hides or returns.
      assert sorted(track) == list(range(first, last + 1))
      if last < len(frames) - 1:
        # Walked out: last seen at the frame's edge.
        x1, _, x2, _ = track[last]
        assert x1 == 0 or x2 == W, track[last]
        left = (seed, tid, last)
      if first > 0:
        assert all(tid not in f['track_ids'] for f in frames[:first])
        x1, _, x2, _ = track[first]
        assert x1 == 0 or x2 == W, track[first]
        entered = (seed, tid, first)
        if left is not None and left[0] == seed and left[2] < first:
          # Someone new after someone left: a new id, not the old one.
          assert tid != left[1]
  assert left is not None and entered is not None, (left, entered)


def test_dropped_frames_are_missing_and_keep_their_numbers(tmp_path):
  kw = dict(num_frames=8, seed=5, image_hw=(H, W))
  full = synthetic_video.SyntheticVideo(**kw)
  dropped = synthetic_video.SyntheticVideo(**kw, drop_frames=[2, 3, 6])
  assert len(full) == 8 and len(dropped) == 5
  kept = [dropped.frame_index(i) for i in range(len(dropped))]
  assert kept == [0, 1, 4, 5, 7]
  for i, t in enumerate(kept):
    a, b = dropped.frame(i), full.frame(t)
    assert a['frame_index'] == t
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  synthetic_video.export(dropped, str(tmp_path))
  data = json.loads((tmp_path / 'posetrack.json').read_text())
  ids = [im['frame_id'] for im in data['images']]
  assert [i - ids[0] for i in ids] == kept
  assert all(im['nframes'] == 8 for im in data['images'])
  assert sorted(os.listdir(tmp_path / 'frames')) == [
      f'{t:06d}.jpg' for t in kept]


def test_export_reads_back_through_the_coco_reader(tmp_path):
  video = synthetic_video.SyntheticVideo(6, seed=3, index=7, image_hw=(H, W),
                                         num_people=(2, 3))
  paths = synthetic_video.export(video, str(tmp_path))
  assert paths['posetrack'] == str(tmp_path / 'posetrack.json')
  data = json.loads((tmp_path / 'posetrack.json').read_text())
  cat = data['categories'][0]
  assert cat['id'] == 1 and cat['keypoints'] == list(NAMES)
  assert sorted(map(tuple, cat['skeleton'])) == sorted(
      (NAMES.index(a) + 1, NAMES.index(b) + 1)
      for a, b in skeletons.COCO17.limbs)
  read = coco.CocoKeypoints(paths['posetrack'], str(tmp_path),
                            parts_dir=paths['parts'])
  assert len(read) == len(video)
  by_image = {}
  for ann in data['annotations']:
    by_image.setdefault(ann['image_id'], []).append(ann)
  head_boxes = 0
  for i in range(len(video)):
    f = video.frame(i)
    info = data['images'][i]
    assert info['id'] == info['frame_id'] == 10_000_070_000 + i
    assert info['vid_id'] == '000007' and info['is_labeled']
    assert info['file_name'] == f'frames/{i:06d}.jpg'
    ex = read[i]
    assert ex['image_id'] == info['id']
    for key in ('keypoints', 'boxes', 'person_masks', 'part_map'):
      np.testing.assert_array_equal(ex[key], f[key], err_msg=key)
    assert np.abs(ex['image'].astype(int) - f['image']).mean() < 8
    anns = by_image.get(info['id'], [])
    assert [a['track_id'] for a in anns] == f['track_ids'].tolist()
    for ann, head, kp in zip(anns, f['head_boxes'], f['keypoints']):
      assert ann['category_id'] == 1 and len(ann['keypoints']) == 51
      assert ann['num_keypoints'] == (kp[:, 2] > 0).sum()
      if np.isnan(head).any():
        assert 'bbox_head' not in ann
      else:
        x1, y1, x2, y2 = head.tolist()
        assert ann['bbox_head'] == [x1, y1, x2 - x1, y2 - y1]
        head_boxes += 1
  assert head_boxes > 0


def test_export_as_mp4(tmp_path):
  video = synthetic_video.SyntheticVideo(5, seed=1, image_hw=(H, W),
                                         drop_frames=[1])
  paths = synthetic_video.export(video, str(tmp_path), as_video=True)
  assert not (tmp_path / 'frames').exists()
  with video_io.VideoReader(paths['video']) as reader:
    frames = list(reader.frames())
  assert len(frames) == len(video) == 4
  error = np.mean([np.abs(a.astype(int) - video.frame(i)['image']).mean()
                   for i, a in enumerate(frames)])
  assert error < 12, error
  data = json.loads(pathlib.Path(paths['posetrack']).read_text())
  assert [im['file_name'] for im in data['images']] == ['video.mp4'] * 4


def test_textures_move_with_their_surfaces():
  """Noise, stripes and gradients painted on a moved surface move along."""
  cfg = scene_lib.Config(
      image_hw=(48, 64), min_people=0, max_people=0, height_range=(0.5, 0.5),
      occluder_prob=0.0, min_visible_fraction=0.0, uniform_colour_prob=0.5,
      max_clutter=3)
  app = pixels.draw_appearance(np.random.default_rng(0), np.zeros(0), 1, cfg,
                               np.empty((3, 48, 64), np.float32))
  m = app.materials[1]
  f = {k: i for i, k in enumerate(materials.MATERIAL_FIELDS)}
  m[[f['ws'], f['wg'], f['shade']]] = 0
  m[[f['w0'], f['w1'], f['w2']]] = 0.2, 0.3, 0.5
  m[f['r1']:f['b2'] + 1] = 0, 0, 0, 255, 255, 255
  painted = []
  for dx, dy in ((0, 0), (9, 5)):
    owner = np.zeros((48, 64), np.uint16)
    owner[10 + dy:30 + dy, 8 + dx:28 + dx] = 1
    # Owner ids 0..3: background and up to three objects.
    frames = np.zeros((len(app.materials), 5))
    frames[1] = 18 + dx, 20 + dy, 1.0, 0.0, 0.0
    noise = np.zeros((len(app.materials), 2, 3))
    noise[1] = [[1, 0, 20 - dx], [0, 1, 15 - dy]]
    moved = pixels.paint(app, owner, frames, pixels.workspace(48, 64),
                         noise)[10 + dy:30 + dy, 8 + dx:28 + dx].copy()
    fixed = pixels.paint(app, owner, frames, pixels.workspace(48, 64),
                         None)[10 + dy:30 + dy, 8 + dx:28 + dx].copy()
    painted.append((moved, fixed))
  (moved0, fixed0), (moved1, fixed1) = painted
  assert moved0.std() > 10
  np.testing.assert_allclose(moved1, moved0, atol=0.5)
  # Without the maps the noise stays in the image and the texture slides.
  assert np.abs(fixed1 - fixed0).mean() > 5


def test_bodies_keep_their_texture_from_frame_to_frame():
  """A walker's torso in the next frame looks like this frame's torso
  moved by the hips' displacement, far more than like the pixels left
  behind."""
  moved, still = [], []
  torso = PARTS.index('torso')
  for seed in (1, 3, 7):
    video = synthetic_video.SyntheticVideo(
        6, seed=seed, image_hw=(96, 128), pan=False, zoom=False,
        occluders=False)
    frames = frames_of(video)
    for a, b in zip(frames, frames[1:]):
      for p, tid in enumerate(b['track_ids']):
        if tid not in a['track_ids']:
          continue
        q = list(a['track_ids']).index(tid)
        hips = [5, 6, 11, 12]
        ka, kb = a['keypoints'][q], b['keypoints'][p]
        if not ((ka[hips, 2] > 0).all() and (kb[hips, 2] > 0).all()):
          continue
        dx, dy = np.round(kb[hips, :2].mean(0) - ka[hips, :2].mean(0)).astype(
            int)
        if abs(dx) < 2:
          continue
        ys, xs = np.nonzero((b['person_masks'][p] > 0) &
                            (b['part_map'] == torso))
        ok = ((ys - dy >= 0) & (ys - dy < 96) & (xs - dx >= 0) &
              (xs - dx < 128))
        ys, xs = ys[ok], xs[ok]
        ok = a['person_masks'][q][ys - dy, xs - dx] > 0
        ys, xs = ys[ok], xs[ok]
        now = b['image'][ys, xs].astype(float)
        moved.append(np.abs(now - a['image'][ys - dy, xs - dx]).mean())
        still.append(np.abs(now - a['image'][ys, xs]).mean())
  assert len(moved) >= 5
  assert np.mean(moved) < 0.6 * np.mean(still), (moved, still)


@pytest.mark.parametrize('kwargs', [
    dict(num_frames=0), dict(num_frames=3, drop_frames=[3]),
    dict(num_frames=3, image_hw=(8, 64)), dict(num_frames=3,
                                               num_people=(3, 2)),
    dict(num_frames=3, height_range=(0.0, 0.5)), dict(num_frames=3, fps=0),
    dict(num_frames=3, index=10**6)])
def test_bad_arguments_raise(kwargs):
  with pytest.raises(ValueError):
    synthetic_video.SyntheticVideo(**kwargs)


def read_tree(root: pathlib.Path) -> dict[str, bytes]:
  return {str(p.relative_to(root)): p.read_bytes()
          for p in sorted(root.rglob('*')) if p.is_file()}


def run_cli(*args):
  root = pathlib.Path(synthetic.__file__).resolve().parents[3]
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(root),
                                                    env.get('PYTHONPATH')]))
  return subprocess.run(
      [sys.executable, '-m', 'hpe_jax.data.synthetic.video', *args],
      env=env, cwd=root, capture_output=True, text=True, check=False)


def test_command_line_matches_python_export(tmp_path):
  done = run_cli(f'--output={tmp_path / "cli"}', '--num_frames=4',
                 '--seed=2', '--num_videos=2', '--drop=1',
                 '--image_size=48,64')
  assert done.returncode == 0, done.stderr
  for index in (0, 1):
    video = synthetic_video.SyntheticVideo(4, seed=2, index=index,
                                           image_hw=(48, 64), drop_frames=[1])
    synthetic_video.export(video, str(tmp_path / 'py' / f'{index:06d}'))
  assert read_tree(tmp_path / 'cli') == read_tree(tmp_path / 'py')
  bad = run_cli(f'--output={tmp_path / "bad"}', '--num_frames=4',
                '--drop=9')
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines() == [
      'hpe_jax.data.synthetic.video: drop_frames [9] are not frames of a '
      '4-frame video']
