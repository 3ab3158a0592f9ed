"""Keypoint propagation (LK, ORB, dense flow) on known motion, tracking
with association and smoothing on a stand-in predictor, annotation
propagation between key frames, and the track command end to end."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hpe_jax.data import skeletons
from hpe_jax.video import annotation_propagation
from hpe_jax.video import propagation
from hpe_jax.video import tracking
from conftest import ROOT

ENV = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
H, W = 120, 160


def texture(seed=0, size=(2 * H, 2 * W)) -> np.ndarray:
  """Smooth colour texture, larger than a frame (frames are cut from it)."""
  noise = np.random.default_rng(seed).uniform(0, 255, (*size, 3))
  blurred = cv2.GaussianBlur(noise.astype(np.float32), (0, 0), 2.0)
  return np.clip(blurred * 4 - 384, 0, 255).astype(np.uint8)


def cut(world: np.ndarray, dx: float, dy: float) -> np.ndarray:
  """The frame seeing `world` moved by (dx, dy) pixels."""
  m = np.float32([[1, 0, dx - W / 2], [0, 1, dy - H / 2]])
  return cv2.warpAffine(world, m, (W, H), flags=cv2.INTER_LINEAR)


def moving(num_frames: int, velocity=(1.5, -1.0)):
  """Frames of a texture moving at `velocity` px/frame, and that motion."""
  world = texture()
  shifts = np.arange(num_frames)[:, None] * np.asarray(velocity)
  return [cut(world, *s) for s in shifts], shifts


POINTS = np.array([[40, 30], [80, 60], [120, 90], [60, 95]], np.float32)


@pytest.mark.parametrize('name,tolerance', [
    ('lk', 0.1), ('orb', 0.8), ('dense', 0.3), ('orb+dense', 0.8)])
@pytest.mark.parametrize('shift', [(1.0, -2.0), (5.5, 3.25)])
def test_each_method_finds_a_known_shift(name, tolerance, shift):
  frames, _ = moving(1)
  current = cut(texture(), *shift)
  moved, found = propagation.method(name)(frames[0], current, POINTS)
  assert found.all()
  np.testing.assert_array_less(
      np.linalg.norm(moved - (POINTS + shift), axis=-1), tolerance)


def test_orb_survives_a_jump_that_defeats_one_level_lk():
  """A 14-pixel jump (dropped frames): ORB's search finds it exactly."""
  frames, _ = moving(1)
  current = cut(texture(), 14.0, -9.0)
  moved, found = propagation.propagate_orb(frames[0], current, POINTS)
  assert found.all()
  np.testing.assert_allclose(moved, POINTS + [14, -9], atol=0.6)
  lk, _ = propagation.propagate_lk(frames[0], current, POINTS, levels=1)
  assert np.linalg.norm(lk - (POINTS + [14, -9]), axis=-1).max() > 2


def test_dense_flags_points_that_leave_the_frame():
  frames, _ = moving(1)
  current = cut(texture(), 12.0, 0.0)
  points = np.array([[W - 5, 60], [60, 60]], np.float32)
  _, found = propagation.propagate_dense(frames[0], current, points)
  assert found.tolist() == [False, True]


def test_unknown_method_is_refused():
  with pytest.raises(ValueError, match='one of'):
    propagation.method('sift')


def test_propagated_track_follows_the_motion_and_smoothing_keeps_it():
  frames, shifts = moving(12)
  start = np.concatenate([POINTS, np.ones((4, 1))], -1)
  for smooth in (False, True):
    track = propagation.propagate_track(frames, start, 'dense', smooth=smooth)
    assert track.shape == (12, 4, 3)
    truth = POINTS[None] + shifts[:, None]
    error = np.linalg.norm(track[..., :2] - truth, axis=-1)
    assert error.max() < 1.0, (smooth, error.max())
  # An unlabelled joint is not followed.
  start[1, 2] = 0
  track = propagation.propagate_track(frames[:3], start, 'lk')
  assert (track[:, 1, 2] == 0).all() and (track[:, 0, 2] == 1).all()


class StandInPredictor:
  """An export's interface with a known answer: each box's pose is the
  true pose of the person whose centre lies in the box."""
  results = 'keypoints'
  task = 'keypoints'
  takes_boxes = True
  metadata = {'skeleton': {'joint_names': ['a', 'b', 'c', 'd'],
                           'oks_sigmas': [0.1] * 4}}

  def __init__(self, poses_per_frame):
    self.poses = poses_per_frame
    self.frame = -1
    self.calls = []

  def predict(self, image, boxes=None):
    del image
    self.frame += 1
    self.calls.append(None if boxes is None else np.asarray(boxes))
    truth = self.poses[self.frame]
    if boxes is None:  # the whole frame: the first person
      boxes = tracking.pose_boxes(truth[:1], 0.0)[0]
    people = []
    for box in np.asarray(boxes).reshape(-1, 4):
      centres = truth[..., :2].mean(1)
      inside = ((centres >= box[:2]) & (centres <= box[2:])).all(-1)
      for p in np.flatnonzero(inside)[:1]:
        people.append({'box': box, 'score': 0.9,
                       'keypoints': np.concatenate(
                           [truth[p, :, :2], np.full((4, 1), 0.9)], -1)})
    return {'people': people}


def two_people(frames: int, shifts) -> np.ndarray:
  """[T, 2, 4, 3] poses of two people moving with the texture."""
  base = np.array([POINTS[:4] * 0.4 + [20, 20], POINTS[:4] * 0.4 + [90, 50]])
  xy = base[None] + shifts[:, None, None]
  return np.concatenate([xy, np.ones((frames, 2, 4, 1))], -1)


def test_tracker_follows_people_found_once_and_keeps_their_ids():
  frames, shifts = moving(8)
  poses = two_people(8, shifts)
  predictor = StandInPredictor(poses)
  tracker = tracking.PoseTracker(predictor, propagation_method='dense')
  # Frame 0: both people given as detections; then no detector at all.
  first = tracking.pose_boxes(poses[0], 0.0)[0]
  out = [tracker.step(frames[0], first)]
  out += [tracker.step(f, np.zeros((0, 4))) for f in frames[1:]]
  assert [f.track_ids.tolist() for f in out] == [[0, 1]] * 8
  # Later frames ran on the propagated boxes, which hold each person.
  assert all(len(c) == 2 for c in predictor.calls[1:])
  for f, truth in zip(out, poses):
    np.testing.assert_allclose(f.keypoints[..., :2], truth[..., :2],
                               atol=1e-4)


def test_duplicate_poses_are_one_person():
  frames, shifts = moving(1)
  poses = two_people(1, shifts)
  box = tracking.pose_boxes(poses[0, :1], 0.0)[0]
  tracker = tracking.PoseTracker(StandInPredictor(poses))
  out = tracker.step(frames[0], np.concatenate([box, box + 0.5]))
  assert len(out) == 1


def test_smoothing_tracks_reduces_jitter():
  rng = np.random.default_rng(0)
  truth = np.stack([np.arange(30) * 2.0, np.arange(30) * 1.0], -1)
  frames = []
  for t in range(30):
    kp = np.concatenate([truth[t] + rng.normal(0, 2, 2), [0.9]])[None, None]
    frames.append(tracking.TrackedFrame(np.array([7]), np.zeros((1, 4)),
                                        np.ones(1), kp.astype(np.float32)))
  tracking.smooth_tracks(frames, 0.2)
  raw = np.array([f.keypoints[0, 0, :2] for f in frames])
  smooth = np.array([f.smoothed[0, 0, :2] for f in frames])
  raw_error = np.linalg.norm(raw - truth, axis=-1).mean()
  smooth_error = np.linalg.norm(smooth - truth, axis=-1).mean()
  assert smooth_error < 0.6 * raw_error


def posetrack_file(path, poses, key_frames, names, track_ids=True):
  """A PoseTrack-style file with `poses` [T, N, K, 3] on `key_frames`."""
  images = [{'id': 100 + t, 'file_name': f'clip/{names[t]}', 'frame_id': t}
            for t in key_frames]
  anns = [{'id': len(images) + i, 'image_id': 100 + t, 'category_id': 1,
           'keypoints': poses[t, n].ravel().tolist(),
           **({'track_id': 5 + n} if track_ids else {})}
          for i, (t, n) in enumerate((t, n) for t in key_frames
                                     for n in range(poses.shape[1]))]
  with open(path, 'w') as f:
    json.dump({'images': images, 'annotations': anns}, f)


@pytest.mark.parametrize('track_ids', [True, False])
def test_annotations_propagate_between_key_frames(tmp_path, track_ids):
  frames, shifts = moving(11)
  poses = two_people(11, shifts)
  names = [f'{t:04d}.png' for t in range(11)]
  path = tmp_path / 'keys.json'
  posetrack_file(path, poses, [0, 10], names, track_ids)
  keys = annotation_propagation.read_key_frames(str(path), 4, names)
  assert sorted(keys) == [0, 10]
  sigmas = np.full(4, 0.1)
  out = annotation_propagation.propagate(frames, keys, 'dense', sigmas)
  assert [f.key_frame for f in out] == [True] + [False] * 9 + [True]
  ids = out[0].track_ids.tolist()
  assert ids == ([5, 6] if track_ids else [0, 1])
  assert all(f.track_ids.tolist() == ids for f in out)
  for f, truth in zip(out, poses):
    np.testing.assert_array_less(
        np.linalg.norm(f.keypoints[..., :2] - truth[..., :2], axis=-1), 1.0)
  # The model agrees with the propagation: OKS near 1; far off: 0.
  boxes = tracking.pose_boxes(poses[5], 0.0)[0]
  near = annotation_propagation.agreement(out[5], poses[5], boxes, sigmas)
  assert (near > 0.9).all()
  off = poses[5].copy()
  off[..., :2] += 40
  far = annotation_propagation.agreement(out[5], off, boxes + 40, sigmas)
  assert (far < 0.1).all()


def test_bad_annotation_files_are_one_line_errors(tmp_path):
  bad = tmp_path / 'bad.json'
  bad.write_text('{"images": [{"id": 1, "file_name": "nothere.png"}]}')
  with pytest.raises(Exception, match='none of its images'):
    annotation_propagation.read_key_frames(str(bad), 4, ['a.png'])
  bad.write_text('[1, 2]')
  with pytest.raises(Exception, match='expected COCO or PoseTrack'):
    annotation_propagation.read_key_frames(str(bad), 4, ['a.png'])


def _run(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'hpe_jax.track', *args],
                        cwd=ROOT, env=ENV, capture_output=True, text=True,
                        timeout=timeout)


@pytest.fixture(scope='module')
def frame_folder(tmp_path_factory):
  folder = tmp_path_factory.mktemp('frames') / 'clip'
  folder.mkdir()
  frames, shifts = moving(6)
  for t, frame in enumerate(frames):
    cv2.imwrite(str(folder / f'{t:04d}.png'), frame[..., ::-1])
  return folder, shifts


def test_track_command_writes_video_and_tracks(tiny_export, frame_folder,
                                               tmp_path):
  folder, _ = frame_folder
  proc = _run(f'--model={tiny_export}', f'--input={folder}',
              f'--output={tmp_path}', '--min_score=0')
  assert proc.returncode == 0, proc.stderr
  records = json.loads((tmp_path / 'clip.json').read_text())
  assert [r['frame'] for r in records] == list(range(6))
  for r in records:
    for p in r['people']:
      assert len(p['keypoints']) == len(p['raw_keypoints']) == 17 * 3
      assert isinstance(p['track_id'], int)
  capture = cv2.VideoCapture(str(tmp_path / 'clip.mp4'))
  assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6


def test_annotation_mode_without_a_model(frame_folder, tmp_path):
  folder, shifts = frame_folder
  coco = np.zeros((6, 1, 17, 3), np.float32)
  coco[:, 0, :4] = two_people(6, shifts)[:, 0]
  names = [f'{t:04d}.png' for t in range(6)]
  keys = tmp_path / 'keys.json'
  posetrack_file(keys, coco, [0, 5], names)
  out = tmp_path / 'out'
  proc = _run(f'--input={folder}', f'--output={out}',
              f'--annotations={keys}', '--propagation=lk')
  assert proc.returncode == 0, proc.stderr
  result = json.loads((out / 'clip_propagated.json').read_text())
  assert [i['is_labeled'] for i in result['images']] == [
      True, False, False, False, False, True]
  assert len(result['annotations']) == 6
  kp = np.array([a['keypoints'] for a in result['annotations']]).reshape(
      6, 17, 3)
  np.testing.assert_array_less(
      np.linalg.norm(kp[:, :4, :2] - coco[:, 0, :4, :2], axis=-1), 1.0)
  assert result['review'] == []
  assert result['categories'][0]['keypoints'] == list(
      skeletons.COCO17.joint_names)


@pytest.mark.parametrize('args,message', [
    ([], 'give one model'),
    (['--model=/nonexistent'], 'not an export'),
    (['--annotations=/nonexistent.json'], 'no such annotation file'),
])
def test_wrong_inputs_stop_in_one_line(frame_folder, tmp_path, args,
                                       message):
  folder, _ = frame_folder
  proc = _run(f'--input={folder}', f'--output={tmp_path}', *args)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr
  assert 'Traceback' not in proc.stderr


def test_annotation_mode_on_an_exported_synthetic_video(tmp_path):
  """PoseTrack key frames of the synthetic video generator, propagated by
  the command between frames 0 and 11, land near the true joints."""
  from hpe_jax.data.synthetic import video as synthetic_video  # pylint: disable=import-outside-toplevel
  clip = synthetic_video.SyntheticVideo(12, seed=0, image_hw=(96, 128),
                                        num_people=(1, 1), pan=False,
                                        occluders=False)
  paths = synthetic_video.export(clip, str(tmp_path / 'clip'))
  data = json.loads(open(paths['posetrack']).read())
  keys = [i for i in data['images'] if i['frame_id'] % 10000 in (0, 11)]
  ids = {i['id'] for i in keys}
  data.update(images=keys, annotations=[a for a in data['annotations']
                                        if a['image_id'] in ids])
  (tmp_path / 'keys.json').write_text(json.dumps(data))
  out = tmp_path / 'out'
  proc = _run(f'--input={paths["frames"]}', f'--output={out}',
              f'--annotations={tmp_path / "keys.json"}',
              '--propagation=dense')
  assert proc.returncode == 0, proc.stderr
  result = json.loads((out / 'frames_propagated.json').read_text())
  by_frame = {a['image_id'] - 1: np.reshape(a['keypoints'], (17, 3))
              for a in result['annotations']}
  errors = []
  for i in range(1, 11):
    truth = clip.frame(i)['keypoints'][0]
    seen = (truth[:, 2] == 2) & (by_frame[i][:, 2] > 0)
    errors += np.linalg.norm(by_frame[i][seen, :2] - truth[seen, :2],
                             axis=-1).tolist()
  assert len(errors) > 50
  assert np.median(errors) < 2.0, np.median(errors)
