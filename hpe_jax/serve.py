"""Serves an exported predictor over HTTP and WebSocket, with a camera page.

  python -m hpe_jax.serve --model=EXPORT [--host=127.0.0.1 --port=8000]
      [--max_batch=8 --max_delay_ms=5] [--detector=PART_RCNN_EXPORT]
      [--token=T] [--max_body_mb=16 --max_pixels=40000000 --max_fps=30]
      [--allow_origin=https://...]

Routes and safety rules: `hpe_jax.serving.server`. Every padded batch size
(1, 2, 4, ... up to --max_batch) is compiled before the server listens, so
nothing compiles while serving. It binds to 127.0.0.1 unless told
otherwise; another address needs a token (--token, or the
HPE_JAX_SERVE_TOKEN environment variable). SIGTERM (or Ctrl-C) stops taking
connections, finishes the requests in flight and exits 0.
"""

import contextlib
import os
import signal

from absl import flags
import uvicorn

from hpe_jax import cli
from hpe_jax import errors
from hpe_jax.serving import exported as exported_lib
from hpe_jax.serving import server

_MODEL = flags.DEFINE_string('model', None, 'Folder of an export '
                             '(python -m hpe_jax.export).')
_DETECTOR = flags.DEFINE_string(
    'detector', None, 'Export of a person detector (part_rcnn) whose boxes '
    'a top-down keypoint model takes when a request gives none.')
_HOST = flags.DEFINE_string('host', '127.0.0.1', 'Address to listen on.')
_PORT = flags.DEFINE_integer('port', 8000, 'Port to listen on.')
_MAX_BATCH = flags.DEFINE_integer('max_batch', 8, 'Most rows (images or '
                                  'person crops) run together.')
_MAX_DELAY_MS = flags.DEFINE_float(
    'max_delay_ms', 5.0, 'How long a batch waits for more requests after '
    'its first.')
_TOKEN = flags.DEFINE_string(
    'token', os.environ.get('HPE_JAX_SERVE_TOKEN'),
    'Token every request but /healthz must carry (default: '
    '$HPE_JAX_SERVE_TOKEN; none on 127.0.0.1).')
_MAX_BODY_MB = flags.DEFINE_float('max_body_mb', 16.0, 'Largest request '
                                  'body or WebSocket message, MiB.')
_MAX_PIXELS = flags.DEFINE_integer('max_pixels', 40_000_000,
                                   'Largest image, in pixels (else 413).')
_MAX_FPS = flags.DEFINE_float('max_fps', 30.0, 'Most frames a second one '
                              'WebSocket connection may send.')
_ALLOW_ORIGIN = flags.DEFINE_list(
    'allow_origin', [], 'Other origins whose pages may call the server '
    '(CORS); none by default.')
_THRESHOLD = flags.DEFINE_float('keypoint_threshold', 0.2, 'Joints scoring '
                                'at or below it are drawn faintly.')


class _Server(uvicorn.Server):
  """uvicorn's server, exiting 0 after a graceful stop: uvicorn raises the
  signal again once it has drained, which would end the process with it."""

  @contextlib.contextmanager
  def capture_signals(self):
    for sig in (signal.SIGINT, signal.SIGTERM):
      signal.signal(sig, self.handle_exit)
    yield


def main(argv):
  del argv
  cli.setup_logging()
  try:
    server.check_binding(_HOST.value, _TOKEN.value)
    model = exported_lib.load(_MODEL.value)
    detector = _DETECTOR.value and exported_lib.load(_DETECTOR.value)
    max_body = int(_MAX_BODY_MB.value * 2**20)
    service = server.Service(model, server.Settings(
        max_batch=_MAX_BATCH.value, max_delay_ms=_MAX_DELAY_MS.value,
        token=_TOKEN.value or None, max_body_bytes=max_body,
        max_pixels=_MAX_PIXELS.value, max_fps=_MAX_FPS.value,
        allow_origins=tuple(_ALLOW_ORIGIN.value),
        keypoint_threshold=_THRESHOLD.value), detector or None)
  except exported_lib.ExportError as e:
    raise errors.ReportableError(str(e)) from e
  service.compile()
  print(f'serving {model.task} ({model.metadata["model"]}, batch sizes '
        f'{service.batcher.sizes}) on http://{_HOST.value}:{_PORT.value}/',
        flush=True)
  _Server(uvicorn.Config(
      server.create_app(service), host=_HOST.value, port=_PORT.value,
      ws_max_size=max_body, timeout_graceful_shutdown=30,
      log_level='warning')).run()
  return 0


if __name__ == '__main__':
  flags.mark_flags_as_required(['model'])
  cli.run(main)
