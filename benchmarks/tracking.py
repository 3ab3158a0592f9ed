"""Keypoint propagation and tracking on synthetic videos with ground truth.

  python benchmarks/tracking.py [--videos=4] [--frames=41] \
      [--drop_every=0] [--model=EXPORT] [--output=FIGURES.json] \
      [--parts=propagation,tracking]

1. Propagation: in each video (`hpe_jax.data.synthetic.video`, seeds 0 ..
   --videos - 1), the people of frame 0 are propagated with every method
   (`hpe_jax.video.propagation`: lk, orb, dense, orb+dense) from their
   labelled joints, with and without offline smoothing. Printed: the mean
   joint error in pixels 1, 5 and 20 frames on, over the joints labelled
   in frame 0 and visible then (lost joints count where they were last
   found), the share of them the method lost, and its time per frame.
   ``--drop_every=N`` drops every N-th frame (larger motion between the
   frames that remain).
2. Tracking (with ``--model``, an export of a top-down keypoint model):
   `hpe_jax.video.tracking.PoseTracker` on the same videos, the model's
   estimates associated into tracks and smoothed; keypoint MOTA,
   precision, recall and identity switches in PoseTrack's convention
   (`keypoint_tracking_metrics`, a joint matching within half the head
   size: 0.6 × the head box diagonal). Two box sources: the people's true
   boxes in frame 0 only (then followed by propagation), and in every frame
   (a perfect detector). The same runs with `NoisyTruth` in place of a
   model (the true pose of the person a box holds best, each joint moved by
   Gaussian noise of --noise pixels and missed with probability --miss)
   measure the association and smoothing by themselves.
"""

import json
import time

from absl import app
from absl import flags
import numpy as np

from hpe_jax import serving
from hpe_jax.data.synthetic import video as synthetic_video
from hpe_jax.evaluation import instance_metrics
from hpe_jax.evaluation import tracking_metrics
from hpe_jax.video import propagation
from hpe_jax.video import tracking

_VIDEOS = flags.DEFINE_integer('videos', 4, 'Synthetic videos (seeds).')
_FRAMES = flags.DEFINE_integer('frames', 41, 'Frames per video.')
_DROP_EVERY = flags.DEFINE_integer('drop_every', 0,
                                   'Drop every N-th frame (0: none).')
_MODEL = flags.DEFINE_string('model', None, 'Export of a keypoint model, '
                             'for the tracking figures.')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON file for the figures.')
_PARTS = flags.DEFINE_list('parts', ['propagation', 'tracking'],
                           'Which figures to measure.')
_NOISE = flags.DEFINE_float('noise', 3.0, 'NoisyTruth joint noise, pixels.')
_MISS = flags.DEFINE_float('miss', 0.1, 'NoisyTruth joint miss rate.')

HORIZONS = (1, 5, 20)


def _videos():
  for seed in range(_VIDEOS.value):
    drop = (tuple(range(_DROP_EVERY.value - 1, _FRAMES.value,
                        _DROP_EVERY.value)) if _DROP_EVERY.value else ())
    clip = synthetic_video.SyntheticVideo(_FRAMES.value, seed,
                                          drop_frames=drop)
    yield [clip.frame(i) for i in range(len(clip))]


def _propagation_figures(videos) -> dict:
  figures = {}
  for name in propagation.METHODS:
    for smooth in (False, True):
      errors = {h: [] for h in HORIZONS}
      lost = {h: [] for h in HORIZONS}
      seconds, steps = 0.0, 0
      for frames in videos:
        start = frames[0]
        kp = start['keypoints'].copy()
        kp[..., 2] = kp[..., 2] == 2  # visible joints only
        span = frames[:max(HORIZONS) + 1]
        t0 = time.perf_counter()
        track = propagation.propagate_track([f['image'] for f in span], kp,
                                            name, smooth=smooth)
        seconds += time.perf_counter() - t0
        steps += len(span) - 1
        for h in HORIZONS:
          if h >= len(span):
            continue
          truth = span[h]
          row = {int(t): n for n, t in enumerate(truth['track_ids'])}
          for p, track_id in enumerate(start['track_ids']):
            n = row.get(int(track_id))
            if n is None:
              continue
            both = (kp[p, :, 2] > 0) & (truth['keypoints'][n, :, 2] == 2)
            error = np.linalg.norm(track[h, p, :, :2] -
                                   truth['keypoints'][n, :, :2], axis=-1)
            errors[h] += error[both].tolist()
            lost[h] += (track[h, p, both, 2] == 0).tolist()
      key = f'{name}{"+smoothing" if smooth else ""}'
      figures[key] = {
          'seconds_per_frame': seconds / max(steps, 1),
          **{f'error_{h}': float(np.mean(errors[h])) for h in HORIZONS},
          **{f'lost_{h}': float(np.mean(lost[h])) for h in HORIZONS},
          **{f'joints_{h}': len(errors[h]) for h in HORIZONS}}
      print(f'{key:22s} ' + '  '.join(
          f'{h:2d} frames: {figures[key][f"error_{h}"]:6.2f} px '
          f'({100 * figures[key][f"lost_{h}"]:4.1f}% lost)'
          for h in HORIZONS) +
            f'  {1000 * figures[key]["seconds_per_frame"]:.1f} ms/frame',
            flush=True)
  return figures


def _ground_truth(frame) -> tracking_metrics.FramePeople:
  heads = frame['head_boxes']
  size = 0.6 * np.hypot(heads[:, 2] - heads[:, 0], heads[:, 3] - heads[:, 1])
  boxes = frame['boxes']
  # A head off the frame has no box: a fifth of the person's box diagonal.
  fallback = 0.2 * np.hypot(boxes[:, 2] - boxes[:, 0],
                            boxes[:, 3] - boxes[:, 1])
  return tracking_metrics.FramePeople(
      frame['track_ids'], frame['keypoints'],
      np.where(np.isfinite(size), size, fallback))


class NoisyTruth:
  """A stand-in for an exported top-down keypoint model (module
  docstring); `frames` are the video's, called in order."""
  results = 'keypoints'
  task = 'keypoints'
  metadata = {'skeleton': {'joint_names': [''] * 17,
                           'oks_sigmas': synthetic_video.SyntheticVideo
                           .skeleton.oks_sigmas}}

  def __init__(self, frames, seed: int):
    self.frames = iter(frames)
    self.rng = np.random.default_rng(seed)

  def predict(self, image, boxes=None):
    del image
    truth = next(self.frames)
    if boxes is None:
      boxes = truth['boxes'][:1]
    people = []
    iou = instance_metrics.box_iou(np.asarray(boxes, np.float64).reshape(
        -1, 4), truth['boxes'].astype(np.float64))
    for box, row in zip(boxes, iou):
      if not row.size or row.max() < 0.3:
        continue
      kp = truth['keypoints'][row.argmax()].copy()
      kp[:, :2] += self.rng.normal(0, _NOISE.value, (17, 2))
      seen = (kp[:, 2] > 0) & (self.rng.random(17) >= _MISS.value)
      kp[:, 2] = np.where(seen, 0.9, 0.05)
      people.append({'box': box, 'score': 0.9, 'keypoints': kp})
    return {'people': people}


def _tracking_figures(videos, make_predictor, label: str) -> dict:
  figures = {}
  for boxes_from in ('first frame', 'every frame'):
    truths, raw, smoothed = [], [], []
    seconds, count = 0.0, 0
    for v, frames in enumerate(videos):
      tracker = tracking.PoseTracker(make_predictor(frames, v))
      found = []
      t0 = time.perf_counter()
      for i, frame in enumerate(frames):
        given = frame['boxes'] if (i == 0 or boxes_from == 'every frame'
                                   ) else np.zeros((0, 4))
        found.append(tracker.step(frame['image'], given))
      tracking.smooth_tracks(found, tracker.keypoint_threshold)
      seconds += time.perf_counter() - t0
      count += len(frames)
      for frame, f in zip(frames, found):
        truths.append(_ground_truth(frame))
        # Track ids must not collide across videos.
        ids = f.track_ids + 10_000 * v
        raw.append(tracking_metrics.FramePeople(ids, f.keypoints))
        smoothed.append(tracking_metrics.FramePeople(ids, f.smoothed))
    for name, predictions in (('raw', raw), ('smoothed', smoothed)):
      metrics = tracking_metrics.keypoint_tracking_metrics(
          truths, predictions, min_score=0.2)
      key = f'{label}/{boxes_from}/{name}'
      figures[key] = {k: metrics[k] for k in ('mota', 'precision', 'recall',
                                              'id_switches')}
      figures[key]['seconds_per_frame'] = seconds / count
      print(f'{label:12s} boxes {boxes_from:12s} {name:9s} '
            f'MOTA {metrics["mota"]:.3f}  '
            f'precision {metrics["precision"]:.3f}  recall '
            f'{metrics["recall"]:.3f}  id switches '
            f'{metrics["id_switches"]:.0f}  '
            f'{1000 * seconds / count:.0f} ms/frame', flush=True)
  return figures


def main(argv):
  del argv
  t0 = time.perf_counter()
  videos = list(_videos())
  print(f'{len(videos)} synthetic videos of {len(videos[0])} frames '
        f'({time.perf_counter() - t0:.1f} s to render)', flush=True)
  figures = {}
  if 'propagation' in _PARTS.value:
    figures['propagation'] = _propagation_figures(videos)
  if 'tracking' in _PARTS.value:
    figures['tracking'] = _tracking_figures(videos, NoisyTruth,
                                            'noisy truth')
    if _MODEL.value:
      predictor = serving.load(_MODEL.value)
      figures['tracking'].update(_tracking_figures(
          videos, lambda frames, seed: predictor, 'model'))
  if _OUTPUT.value:
    with open(_OUTPUT.value, 'w') as f:
      json.dump(figures, f, indent=1)


if __name__ == '__main__':
  app.run(main)
