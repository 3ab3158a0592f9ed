r"""Tracks people's keypoints along a video, or propagates keypoint
annotations between labelled frames.

  python -m hpe_jax.track (--model=EXPORT | --workdir=RUN [--checkpoint=...]) \
      --input=VIDEO_OR_FRAME_FOLDER --output=OUT [--boxes=DETECTIONS.json] \
      [--propagation=orb+dense] [--smooth=true] [--min_score=0.1]

  python -m hpe_jax.track --annotations=KEY_FRAMES.json \
      --input=VIDEO_OR_FRAME_FOLDER --output=OUT \
      [--model=EXPORT | --workdir=RUN] [--min_agreement=0.5]

Tracking: every frame is estimated (`hpe_jax.video.tracking`: a top-down
keypoint model on the given detections, ``--boxes``, a COCO detection file
whose ``image_id`` is the frame number, and on the people of the previous
frame followed by keypoint propagation; a detector model on the whole
frame), people get track ids by OKS association, and each track is
smoothed offline (``--smooth``). Writes ``OUT/<stem>.mp4`` (skeletons, and
each person's box and id in the track's colour) and ``OUT/<stem>.json``:
one record per frame, ``{"frame", "time_s", "people": [{"track_id",
"box", "score", "keypoints" (3K numbers, smoothed), "raw_keypoints"}]}``.

Annotation propagation (``--annotations``, COCO or PoseTrack JSON; see
`hpe_jax.video.annotation_propagation`): the labelled people are followed
from each key frame to the next with ``--propagation`` and smoothed with
the key frames as anchors. With a model, each propagated person is
compared with the model's estimate (OKS), and people below
``--min_agreement``, or who lost a labelled joint, are flagged for review.
Writes ``OUT/<stem>.mp4`` (flagged people boxed in red) and
``OUT/<stem>_propagated.json``, PoseTrack-style: ``images`` (every frame,
``is_labeled`` for key frames), ``annotations`` (``track_id``,
``keypoints``, ``bbox``, ``propagated``, ``agreement``, ``review``) and
``review``: the frames to look at.

``--workdir`` runs a trained run: it is exported first into
``OUT/model`` (the same predictor that ``python -m hpe_jax.export``
writes). Frames of a folder are its images in file name order, at
``--fps``. Wrong inputs stop with one line; a frame that cannot be decoded
ends the video there (what came before is written, exit status 1).
"""

import json
import os
import sys

from absl import flags
import cv2
import jax
import numpy as np

from hpe_jax import cli
from hpe_jax import errors
from hpe_jax import visualization
from hpe_jax.data import coco
from hpe_jax.data import skeletons
from hpe_jax.data import video
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.serving import exported
from hpe_jax.serving import exporter
from hpe_jax.serving import results
from hpe_jax.video import annotation_propagation
from hpe_jax.video import propagation
from hpe_jax.video import tracking

_INPUT = flags.DEFINE_string('input', None, 'A video file or a folder of '
                             'frame images.')
_OUTPUT = flags.DEFINE_string('output', None, 'Folder for the outputs.')
_MODEL = flags.DEFINE_string('model', None, 'An export (python -m '
                             'hpe_jax.export); or give --workdir.')
_BOXES = flags.DEFINE_string(
    'boxes', None, 'COCO detection results, image_id = frame number (top-down '
    'keypoint models).')
_ANNOTATIONS = flags.DEFINE_string(
    'annotations', None, 'COCO or PoseTrack keypoint annotations of key '
    'frames: propagate them instead of tracking.')
_PROPAGATION = flags.DEFINE_enum(
    'propagation', 'orb+dense', sorted(propagation.METHODS),
    'How keypoints move from frame to frame.')
_SMOOTH = flags.DEFINE_bool('smooth', True, 'Smooth each track offline.')
_MIN_SCORE = flags.DEFINE_float('min_score', 0.1,
                                'People scoring lower are dropped.')
_THRESHOLD = flags.DEFINE_float(
    'keypoint_threshold', 0.2, 'Joints scoring at or below it are drawn '
    'faintly and not smoothed.')
_MIN_AGREEMENT = flags.DEFINE_float(
    'min_agreement', 0.5, 'Propagated people whose OKS with the model\'s '
    'estimate is below it are flagged for review.')
_FPS = flags.DEFINE_float('fps', 25.0, 'Frame rate of a frame folder.')

_REVIEW_COLOUR = (255, 0, 0)


def _load_model(output: str):
  """The export of --model, or --workdir's run exported into OUT/model."""
  if _MODEL.value:
    return exported.load(_MODEL.value)
  if not flags.FLAGS.workdir:
    return None
  config, model, variables, step, _ = cli.load_run()
  platform = 'cuda' if jax.default_backend() == 'gpu' else 'cpu'
  path = os.path.join(output, 'model')
  exporter.export_predictor(config, model, variables, step, path,
                            platforms=(platform,))
  return exported.load(path)


def _draw(image, keypoints, boxes, track_ids, skeleton, flagged=None):
  """Skeletons, and boxes and ids in each track's colour."""
  out = visualization.draw_skeleton(image, keypoints, skeleton,
                                    threshold=_THRESHOLD.value, faint=True)
  colours = visualization.person_colors(256)
  for n, (box, track) in enumerate(zip(boxes, track_ids)):
    colour = tuple(int(c) for c in colours[int(track) % 256])
    if flagged is not None and flagged[n]:
      colour = _REVIEW_COLOUR
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    cv2.rectangle(out, (x1, y1), (x2, y2), colour, 1)
    cv2.putText(out, str(int(track)), (x1 + 2, max(y1 - 3, 10)),
                cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
  return out


def _detections() -> dict[int, np.ndarray] | None:
  """--boxes' boxes [N, 4] per frame number."""
  if not _BOXES.value:
    return None
  found = coco.load_detections(_BOXES.value, None, _MIN_SCORE.value)
  return {i: boxes for i, (boxes, _) in found.items() if len(boxes)}


def _track(predictor, reader, stem: str) -> int:
  skeleton = results.skeleton_of(predictor.metadata)
  detections = _detections()
  tracker = tracking.PoseTracker(
      predictor, propagation_method=_PROPAGATION.value,
      min_score=_MIN_SCORE.value, keypoint_threshold=_THRESHOLD.value)
  frames = []
  with reader:
    for i, image in enumerate(reader.frames()):
      frames.append(tracker.step(image, None if detections is None else
                                 detections.get(i, np.zeros((0, 4)))))
  if _SMOOTH.value:
    tracking.smooth_tracks(frames, _THRESHOLD.value)
  records = []
  out = os.path.join(_OUTPUT.value, f'{stem}.mp4')
  with video.open_frames(_INPUT.value, _FPS.value) as again, \
      video.VideoWriter(out, reader.fps) as writer:
    for i, (image, f) in enumerate(zip(again.frames(), frames)):
      kp = f.smoothed if f.smoothed is not None else f.keypoints
      writer.write(_draw(image, kp, f.boxes, f.track_ids, skeleton))
      records.append({'frame': i, 'time_s': round(i / reader.fps, 4),
                      'people': [{
                          'track_id': int(t), 'box': b.round(2).tolist(),
                          'score': round(float(s), 4),
                          'keypoints': k.round(2).ravel().tolist(),
                          'raw_keypoints': r.round(2).ravel().tolist()}
                                 for t, b, s, k, r in zip(
                                     f.track_ids, f.boxes, f.scores, kp,
                                     f.keypoints)]})
  with open(os.path.join(_OUTPUT.value, f'{stem}.json'), 'w') as fp:
    json.dump(records, fp)
  tracks = len({int(t) for f in frames for t in f.track_ids})
  print(f'{len(frames)} frames, {tracks} tracks, '
        f'{sum(len(f) for f in frames)} people found -> {out}')
  return video.exit_status(reader)


def _estimates(predictor, image, frame):
  """The model's poses [M, K, 3] and boxes [M, 4] for the people of a
  propagated frame."""
  if predictor.takes_boxes:
    boxes, ok = tracking.pose_boxes(frame.keypoints, 0.0)
    result = predictor.predict(image, boxes=boxes[ok])
  else:
    result = predictor.predict(image)
  people = result['people']
  if not people:
    k = frame.keypoints.shape[1]
    return np.zeros((0, k, 3), np.float32), np.zeros((0, 4), np.float32)
  return (np.stack([np.asarray(p['keypoints'], np.float32) for p in people]),
          np.stack([np.asarray(p['box'], np.float32) for p in people]))


def _propagate(predictor, reader, stem: str) -> int:
  if predictor is not None and predictor.results not in ('keypoints',
                                                         'people'):
    raise errors.ReportableError(
        f'a {predictor.task} model does not estimate people\'s keypoints: '
        'give a keypoint or part_rcnn model, or none')
  names = getattr(reader, 'names', None)
  if predictor is not None:
    skeleton = results.skeleton_of(predictor.metadata)
    key_frames = annotation_propagation.read_key_frames(
        _ANNOTATIONS.value, skeleton.num_joints, names)
  else:
    skeleton = skeletons.COCO17
    key_frames = annotation_propagation.read_key_frames(
        _ANNOTATIONS.value, None, names)
    k = next((len(f.keypoints[0]) for f in key_frames.values()
              if len(f.keypoints)), 17)
    if k != skeleton.num_joints:
      raise errors.ReportableError(
          f'{_ANNOTATIONS.value}: people with {k} joints; without a model '
          'only COCO-17 people can be drawn (give --model for its skeleton)')
  sigmas = coco_keypoints.sigmas_or_mean(skeleton.oks_sigmas,
                                        skeleton.num_joints)
  with reader:
    frames = annotation_propagation.propagate(
        reader.frames(), key_frames, _PROPAGATION.value, sigmas,
        smooth=_SMOOTH.value)
  images, annotations, review = [], [], []
  out = os.path.join(_OUTPUT.value, f'{stem}.mp4')
  with video.open_frames(_INPUT.value, _FPS.value) as again, \
      video.VideoWriter(out, reader.fps) as writer:
    for i, (image, f) in enumerate(zip(again.frames(), frames)):
      agree = None
      if predictor is not None and len(f.track_ids) and not f.key_frame:
        agree = annotation_propagation.agreement(
            f, *_estimates(predictor, image, f), sigmas,
            _THRESHOLD.value)
      flagged = f.lost.any(-1)
      if agree is not None:
        flagged |= agree < _MIN_AGREEMENT.value
      boxes, _ = tracking.pose_boxes(f.keypoints, 0.0, 1.0)
      writer.write(_draw(image, f.keypoints, boxes, f.track_ids, skeleton,
                         flagged))
      images.append({'id': i + 1, 'frame_id': i, 'is_labeled': f.key_frame,
                     'file_name': names[i] if names else f'{stem}/{i:06d}'})
      for n, (track, kp, box) in enumerate(zip(f.track_ids, f.keypoints,
                                               boxes)):
        annotations.append({
            'id': len(annotations) + 1, 'image_id': i + 1,
            'category_id': 1, 'track_id': int(track),
            'keypoints': kp.round(2).ravel().tolist(),
            'num_keypoints': int((kp[:, 2] > 0).sum()),
            'bbox': [round(float(box[0]), 2), round(float(box[1]), 2),
                     round(float(box[2] - box[0]), 2),
                     round(float(box[3] - box[1]), 2)],
            'propagated': not f.key_frame,
            'agreement': None if agree is None else round(float(agree[n]), 4),
            'review': bool(flagged[n])})
      if flagged.any():
        review.append({'frame': i, 'track_ids': [
            int(t) for t in f.track_ids[flagged]]})
  path = os.path.join(_OUTPUT.value, f'{stem}_propagated.json')
  with open(path, 'w') as fp:
    json.dump({'images': images, 'annotations': annotations,
               'categories': [coco.coco_categories(skeleton)[0]],
               'review': review}, fp)
  print(f'{len(frames)} frames, {len(key_frames)} key frames, '
        f'{sum(not f.key_frame for f in frames)} propagated with '
        f'{_PROPAGATION.value}; {sum(len(r["track_ids"]) for r in review)} '
        f'people in {len(review)} frames flagged for review -> {path}')
  return video.exit_status(reader)


def main(argv):
  del argv
  given = bool(_MODEL.value) + bool(flags.FLAGS.workdir)
  if given > 1 or (given == 0 and not _ANNOTATIONS.value):
    raise errors.ReportableError('give one model: --model=EXPORT or '
                                 '--workdir=RUN')
  reader = video.open_frames(_INPUT.value, _FPS.value)
  cli.output_folder(_OUTPUT.value)
  stem = os.path.splitext(os.path.basename(os.path.normpath(
      _INPUT.value)))[0]
  try:
    predictor = _load_model(_OUTPUT.value)
  except exported.ExportError as e:
    raise errors.ReportableError(str(e)) from None
  if _ANNOTATIONS.value:
    return _propagate(predictor, reader, stem)
  try:
    tracking.PoseTracker(predictor)
  except ValueError as e:
    raise errors.ReportableError(str(e)) from None
  return _track(predictor, reader, stem)


if __name__ == '__main__':
  if cli.workdir_from_argv(sys.argv):
    cli.define_run_flags(sys.argv)
  else:
    flags.DEFINE_string('workdir', None, 'Workdir of a training run.')
    flags.DEFINE_string('checkpoint', 'latest',
                        "'latest', 'best' or a step number.")
  flags.mark_flags_as_required(['input', 'output'])
  cli.run(main)
