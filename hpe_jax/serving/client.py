"""Streams a video file or a camera to a server's WebSocket and writes what
comes back.

  python -m hpe_jax.serving.client --server=http://127.0.0.1:8000 \\
      --video=FILE_OR_CAMERA_INDEX [--output=out.mp4] [--token=T] \\
      [--max_frames=N] [--draw] [--max_fps=25] [--keypoint_threshold=0.2]

Each frame goes as a JPEG over ``/v1/stream`` (`hpe_jax.serving.server`),
one frame in flight: the next leaves once the reply to the last is in, and
no more than --max_fps a second leave, since the server drops frames beyond
its own --max_fps (30 by default) with an error reply. With --output it
writes the annotated video at the source's frame rate (the server's drawn
frames with --draw; else the label map overlay and the skeletons drawn
here, with the skeleton of ``GET /v1/model``; a frame answered with an
error as it was sent) and ``<output stem>.json``: per frame ``frame``,
``time_s`` (in the video; for a camera, since the first frame),
``round_trip_ms`` and the reply's ``server_ms``, ``people`` (COCO results),
``joints`` or ``error`` (the reply's base64 overlay is left out: the
video shows it). It prints frames sent, answered (without an error),
errors, the mean round trip and frames answered a second.

The token goes as ``Authorization: Bearer`` on HTTP and ``?token=`` on the
WebSocket. A server that cannot be reached, a wrong token or a video that
cannot be opened is one line and exit status 1, before anything is sent.
The stream closing, a reply not coming within REPLY_TIMEOUT_S or a frame
that cannot be decoded ends it: what came before is written, the cause is
printed and the exit status is 1. Ctrl-C ends a camera's stream as normal.
"""

import base64
import contextlib
import itertools
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

from absl import flags
import cv2
import numpy as np
import websockets.exceptions
from websockets.sync.client import connect

from hpe_jax import cli
from hpe_jax import errors
from hpe_jax.data import video
from hpe_jax.serving import results as results_lib

_SERVER = flags.DEFINE_string('server', None, 'The server\'s base URL, e.g. '
                              'http://127.0.0.1:8000.')
_VIDEO = flags.DEFINE_string('video', None, 'A video file, or a camera\'s '
                             'index (0 for the first).')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'Annotated video to write (MP4), with <stem>.json '
    'beside it; none by default.')
_TOKEN = flags.DEFINE_string('token', None, 'The server\'s token, if it has '
                             'one.')
_MAX_FRAMES = flags.DEFINE_integer('max_frames', None, 'Stop after this '
                                   'many frames (default: all).',
                                   lower_bound=1)
_DRAW = flags.DEFINE_bool('draw', False, 'Write the frames the server draws '
                          '(else drawn here from its results).')
_MAX_FPS = flags.DEFINE_float(
    'max_fps', 25.0, 'Most frames sent a second; below the server\'s '
    '--max_fps, with room for network jitter.', lower_bound=0.01)
_THRESHOLD = flags.DEFINE_float('keypoint_threshold', 0.2, 'Joints scoring '
                                'at or below it are drawn faintly.')

# The server compiles before it listens, so a reply takes milliseconds;
# this long without one, it is stuck.
REPLY_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0


def check_server_url(server: str) -> str:
  """`server` without a trailing slash, or a one-line error."""
  parts = urllib.parse.urlsplit(server)
  if parts.scheme not in ('http', 'https') or not parts.netloc:
    raise errors.ReportableError(f'--server={server}: expected a URL like '
                                 'http://127.0.0.1:8000')
  return server.rstrip('/')


def stream_url(server: str, token: str | None, draw: bool) -> str:
  """The ``/v1/stream`` WebSocket URL of `server` (an http(s) URL)."""
  parts = urllib.parse.urlsplit(server)
  query = urllib.parse.urlencode(
      [('draw', '1')] * draw + [('token', token)] * bool(token))
  return urllib.parse.urlunsplit(
      ('wss' if parts.scheme == 'https' else 'ws', parts.netloc,
       parts.path + '/v1/stream', query, ''))


def model_info(server: str, token: str | None) -> dict:
  """``GET /v1/model``; a server that cannot be reached or refuses is a
  one-line error."""
  headers = {'Authorization': f'Bearer {token}'} if token else {}
  request = urllib.request.Request(server + '/v1/model', headers=headers)
  try:
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
      return json.load(response)
  except urllib.error.HTTPError as e:
    try:
      said = json.load(e)['error']
    except (ValueError, KeyError, TypeError):
      said = e.reason
    raise errors.ReportableError(
        f'{server}: GET /v1/model answered {e.code} ({said})') from e
  except (urllib.error.URLError, OSError, ValueError) as e:
    raise errors.ReportableError(
        f'{server}: cannot reach the server '
        f'({getattr(e, "reason", None) or e})') from e


def draw_reply(frame: np.ndarray, reply: dict, skeleton,
               threshold: float) -> np.ndarray:
  """`frame` with a stream reply's label map overlay and skeletons drawn,
  as the server's ``draw=1`` frames have them."""
  drawn = frame
  if reply.get('overlay'):
    bgra = cv2.imdecode(np.frombuffer(base64.b64decode(reply['overlay']),
                                      np.uint8), cv2.IMREAD_UNCHANGED)
    alpha = bgra[..., 3:].astype(np.float32) / 255
    colours = cv2.cvtColor(bgra[..., :3], cv2.COLOR_BGR2RGB)
    drawn = (drawn * (1 - alpha) + colours * alpha).astype(np.uint8)
  return results_lib.draw_poses(
      drawn, [p.get('keypoints', ()) for p in reply['people']],
      reply.get('joints', {}), skeleton, threshold)


def receive(stream, draw: bool):
  """The server's reply to a frame and, with `draw`, its drawing of the
  frame (None after an error reply, which comes alone)."""
  reply = json.loads(stream.recv(timeout=REPLY_TIMEOUT_S))
  if not draw or 'error' in reply:
    return reply, None
  jpeg = np.frombuffer(stream.recv(timeout=REPLY_TIMEOUT_S), np.uint8)
  return reply, cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR),
                             cv2.COLOR_BGR2RGB)


def main(argv):
  del argv
  server = check_server_url(_SERVER.value)
  source = int(_VIDEO.value) if _VIDEO.value.isdigit() else _VIDEO.value
  reader = video.VideoReader(source)
  metadata = model_info(server, _TOKEN.value)
  skeleton = results_lib.skeleton_of(metadata)
  if _OUTPUT.value:
    cli.output_folder(os.path.dirname(os.path.abspath(_OUTPUT.value)))
  try:
    # JPEG frames gain nothing from compression; replies hold base64 label
    # maps, which outgrow the 1 MiB default for large frames.
    stream = connect(stream_url(server, _TOKEN.value, _DRAW.value),
                     open_timeout=HTTP_TIMEOUT_S, compression=None,
                     max_size=None)
  except (OSError, websockets.exceptions.WebSocketException) as e:
    raise errors.ReportableError(
        f'{server}: cannot open the /v1/stream WebSocket ({e})') from e
  writer = (video.VideoWriter(_OUTPUT.value, reader.fps) if _OUTPUT.value
            else None)
  records, round_trips, sent, stopped = [], [], 0, None
  frames = itertools.islice(reader.frames(), _MAX_FRAMES.value)
  start = next_send = time.monotonic()
  with reader, stream, writer or contextlib.nullcontext():
    try:
      for i, frame in enumerate(frames):
        time.sleep(max(0.0, next_send - time.monotonic()))
        sent_at = time.monotonic()
        next_send = sent_at + 1 / _MAX_FPS.value
        stream.send(results_lib.jpeg(frame))
        sent += 1
        reply, drawn = receive(stream, _DRAW.value)
        round_trips.append((time.monotonic() - sent_at) * 1000)
        records.append({
            'frame': i,
            'time_s': round(i / reader.fps if isinstance(source, str) else
                            sent_at - start, 4),
            'round_trip_ms': round(round_trips[-1], 2),
            **{k: reply[k] for k in ('server_ms', 'people', 'joints', 'error')
               if k in reply}})
        if writer is not None:
          if drawn is None and 'error' not in reply:
            drawn = draw_reply(frame, reply, skeleton, _THRESHOLD.value)
          writer.write(frame if drawn is None else drawn)
    except websockets.exceptions.ConnectionClosed as e:
      stopped = f'the server closed the stream ({e})'
    except TimeoutError:
      stopped = f'no reply in {REPLY_TIMEOUT_S:g} s: stopped'
    except KeyboardInterrupt:
      pass  # how a camera's stream ends
  elapsed = time.monotonic() - start
  if _OUTPUT.value:
    with open(os.path.splitext(_OUTPUT.value)[0] + '.json', 'w') as f:
      json.dump(records, f)
  failed = sum('error' in r for r in records)
  answered = len(records) - failed
  mean = f'{np.mean(round_trips):.1f}' if round_trips else '-'
  print(f'{sent} frames sent, {answered} answered, {failed} errors, mean '
        f'round trip {mean} ms, {answered / elapsed:.1f} frames/s'
        + (f' -> {_OUTPUT.value}' if _OUTPUT.value else ''))
  for problem in (stopped, reader.error):
    if problem:
      print(problem)
  return 1 if stopped or reader.error else 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['server', 'video'])
  cli.run(main)
