"""The inference server: an exported predictor behind HTTP and a WebSocket
(FastAPI on uvicorn), with dynamic batching.

Routes:

* ``POST /v1/predict``: an image as the body (``image/jpeg``, ``image/png``,
  ... or ``application/octet-stream``) or as the ``image`` field of a
  multipart form; optional ``boxes`` (JSON [[x1, y1, x2, y2(, score)], ...]
  for top-down keypoint models) or ``poses`` (JSON [[[x, y, score] per
  joint], ...] for the pose-conditioned mask model), as query parameters or
  form fields. Returns `results.to_json`, or with ``?draw=1`` the image drawn
  (JPEG).
* ``WS /v1/stream``: binary messages, each one encoded frame; one JSON reply
  per frame (`results.to_json` with the label-map overlay, ``frame`` and
  ``server_ms``), and with ``?draw=1`` the drawn frame (JPEG) after it.
* ``GET /``: the camera page; ``GET /v1/model``: what the page needs of the
  export; ``GET /healthz``; ``GET /metrics`` (Prometheus text).

Safety: a token, when set, must come with every request but ``/healthz``
(``Authorization: Bearer TOKEN`` or ``?token=TOKEN``); bodies, image sizes
and WebSocket frame rates are capped; cross-origin requests (and WebSocket
connections from pages of another origin) are refused unless allowed;
request data is only ever decoded as an image or parsed as JSON. A bad
request gets a 4xx with one line saying what is wrong.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hmac
import importlib.resources
import io
import json
import time
import urllib.parse

import fastapi
from fastapi import responses
from fastapi.middleware import cors
import numpy as np
from PIL import Image
import prometheus_client
from starlette import concurrency

from hpe_jax.serving import batching
from hpe_jax.serving import exported as exported_lib
from hpe_jax.serving import results as results_lib

IMAGE_TYPES = ('image/jpeg', 'image/png', 'image/bmp', 'image/webp',
               'image/tiff', 'application/octet-stream')


@dataclasses.dataclass(frozen=True)
class Settings:
  """The server's limits and options (`hpe_jax.serve` flags)."""
  max_batch: int = 8
  max_delay_ms: float = 5.0
  token: str | None = None
  max_body_bytes: int = 16 * 2**20
  max_pixels: int = 40_000_000
  max_fps: float = 30.0
  allow_origins: tuple[str, ...] = ()
  keypoint_threshold: float = 0.2
  detector_min_score: float = 0.3


class RequestError(Exception):
  """A client's mistake: status code and one line."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
  """RGB uint8 pixels of an encoded image, or a `RequestError`."""
  if not data:
    raise RequestError(400, 'empty body: send an image (JPEG, PNG, ...)')
  try:
    image = Image.open(io.BytesIO(data))
    width, height = image.size
    if not width or not height:
      raise RequestError(400, f'empty image ({width}x{height})')
    if width * height > max_pixels:
      raise RequestError(413, f'{width}x{height} image: more than the '
                         f'limit of {max_pixels} pixels')
    image.load()
    return np.asarray(image.convert('RGB'))
  except Image.DecompressionBombError as e:
    raise RequestError(413, f'image larger than the limit ({e})') from e
  except Image.UnidentifiedImageError as e:
    raise RequestError(400, 'the body is not an image in a known format '
                       '(JPEG, PNG, BMP, WebP, TIFF)') from e
  except (OSError, SyntaxError, ValueError) as e:
    raise RequestError(400, f'damaged image: {e}') from e


def parse_people(text: str | None, name: str, last_shape) -> np.ndarray | None:
  """The ``boxes`` or ``poses`` field: a JSON array of numbers whose
  trailing shape is one of `last_shape`, or a `RequestError`."""
  if text is None or text == '':
    return None
  try:
    array = np.asarray(json.loads(text), np.float32)
  except (ValueError, TypeError) as e:
    raise RequestError(400, f'{name}: not a rectangular JSON array of '
                       'numbers') from e
  if array.size == 0:
    return array.reshape(0, *last_shape[0])
  if (array.ndim != len(last_shape[0]) + 1 or
      array.shape[1:] not in [tuple(s) for s in last_shape] or
      not np.isfinite(array).all()):
    wanted = ' or '.join(f'[N, {", ".join(map(str, s))}]' for s in last_shape)
    raise RequestError(400, f'{name}: expected {wanted} finite numbers, got '
                       f'shape {list(array.shape)}')
  return array


class Metrics:
  """The server's Prometheus metrics, in a registry of its own."""

  def __init__(self, model, max_batch: int):
    self.registry = prometheus_client.CollectorRegistry()
    self.requests = prometheus_client.Counter(
        'hpe_jax_requests', 'Requests by route and status code.',
        ['route', 'code'], registry=self.registry)
    self.errors = prometheus_client.Counter(
        'hpe_jax_request_errors', 'Requests answered with a 4xx or 5xx.',
        ['route'], registry=self.registry)
    self.latency = prometheus_client.Histogram(
        'hpe_jax_request_latency_seconds', 'Time to answer a request.',
        ['route'], registry=self.registry,
        buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
    self.batch_rows = prometheus_client.Histogram(
        'hpe_jax_batch_rows', 'Real rows in each batch run.',
        registry=self.registry,
        buckets=batching.batch_sizes(max_batch))
    self.padded_rows = prometheus_client.Counter(
        'hpe_jax_padded_rows', 'Padding rows run to fill compiled sizes.',
        registry=self.registry)
    self.frames = prometheus_client.Counter(
        'hpe_jax_stream_frames', 'WebSocket frames by outcome.',
        ['outcome'], registry=self.registry)
    compilations = prometheus_client.Gauge(
        'hpe_jax_compilations', 'Batch shapes compiled (all at start-up).',
        registry=self.registry)
    compilations.set_function(lambda: model.compilations)

  def on_batch(self, rows: int, size: int) -> None:
    self.batch_rows.observe(rows)
    self.padded_rows.inc(size - rows)


def _token_of(request) -> str | None:
  header = request.headers.get('authorization', '')
  if header.lower().startswith('bearer '):
    return header[7:].strip()
  return request.query_params.get('token')


def _same_origin(origin: str, host: str | None) -> bool:
  return urllib.parse.urlsplit(origin).netloc == host


class Service:
  """The model (and detector), their batchers and what requests share."""

  def __init__(self, model: exported_lib.ExportedPredictor,
               settings: Settings,
               detector: exported_lib.ExportedPredictor | None = None):
    if detector is not None and not model.takes_boxes:
      raise exported_lib.ExportError(
          'a detector gives person boxes, which this model does not take')
    self.model, self.detector, self.settings = model, detector, settings
    self.metrics = Metrics(model, settings.max_batch)
    self.batcher = batching.DynamicBatcher(
        model, settings.max_batch, settings.max_delay_ms,
        on_batch=self.metrics.on_batch)
    self.detector_batcher = detector and batching.DynamicBatcher(
        detector, settings.max_batch, settings.max_delay_ms)

  def compile(self) -> None:
    for b in (self.batcher, self.detector_batcher):
      if b:
        b.compile()

  async def start(self) -> None:
    for b in (self.batcher, self.detector_batcher):
      if b:
        await b.start()

  async def stop(self) -> None:
    for b in (self.batcher, self.detector_batcher):
      if b:
        await b.stop()

  def coming(self):
    """Context of a request on its way to the model (`DynamicBatcher.expect`:
    batches wait for such requests only)."""
    return self.batcher.expect()

  async def _run(self, model, batcher, image, boxes=None, poses=None):
    try:
      rows = await concurrency.run_in_threadpool(model.prepare, image,
                                                 boxes, poses)
    except exported_lib.ExportError as e:
      raise RequestError(400, str(e)) from e
    outputs = await batcher.run_rows(rows.batch) if len(rows) else {}
    return await concurrency.run_in_threadpool(model.finish, rows, outputs)

  async def predict(self, image, boxes=None, poses=None) -> dict:
    """Results of one image; call within `coming`."""
    if boxes is not None and not self.model.takes_boxes:
      raise RequestError(400, 'boxes: this model takes none')
    if poses is not None and not self.model.takes_poses:
      raise RequestError(400, 'poses: this model takes none')
    if self.model.takes_poses and poses is None:
      raise RequestError(400, 'poses: this model needs the people\'s poses')
    if boxes is None and self.detector is not None:
      with self.detector_batcher.expect():
        found = await self._run(self.detector, self.detector_batcher, image)
      boxes = np.array([[*p['box'], p['score']] for p in found['people']
                        if p['score'] >= self.settings.detector_min_score],
                       np.float32).reshape(-1, 5)
      if not len(boxes):
        return {'image_size': list(image.shape[:2]), 'people': []}
    return await self._run(self.model, self.batcher, image, boxes, poses)

  def model_info(self) -> dict:
    meta = self.model.metadata
    keys = ('task', 'model', 'rows', 'results', 'input_size', 'skeleton',
            'part_schema', 'checkpoint_step')
    return {**{k: meta.get(k) for k in keys},
            'max_batch': self.settings.max_batch,
            'max_fps': self.settings.max_fps,
            'detector': self.detector is not None}


def _static(name: str) -> str:
  return (importlib.resources.files('hpe_jax.serving') / 'static' / name
          ).read_text()


def create_app(service: Service) -> fastapi.FastAPI:
  """The ASGI app of `service` (compiled already: see `Service.compile`)."""
  settings = service.settings
  metrics = service.metrics

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    await service.start()
    yield
    await service.stop()

  app = fastapi.FastAPI(title='hpe_jax', lifespan=lifespan, docs_url=None,
                        redoc_url=None, openapi_url=None)

  def error(status: int, message: str) -> responses.JSONResponse:
    return responses.JSONResponse({'error': message}, status_code=status)

  @app.middleware('http')
  async def guard(request: fastapi.Request, call_next):
    start = time.perf_counter()
    route = request.url.path
    if route not in ('/', '/healthz', '/metrics', '/v1/model',
                     '/v1/predict') and not route.startswith('/static/'):
      route = 'other'
    if settings.token and request.url.path != '/healthz' and (
        not hmac.compare_digest(_token_of(request) or '', settings.token)):
      response = error(401, 'missing or wrong token (Authorization: Bearer '
                       'TOKEN, or ?token=TOKEN)')
    else:
      length = request.headers.get('content-length')
      if length is not None and (not length.isdigit() or
                                 int(length) > settings.max_body_bytes):
        response = error(413, f'body larger than the limit of '
                         f'{settings.max_body_bytes} bytes')
      else:
        response = await call_next(request)
    metrics.requests.labels(route, str(response.status_code)).inc()
    if response.status_code >= 400:
      metrics.errors.labels(route).inc()
    metrics.latency.labels(route).observe(time.perf_counter() - start)
    return response

  if settings.allow_origins:
    app.add_middleware(cors.CORSMiddleware,
                       allow_origins=list(settings.allow_origins),
                       allow_methods=['GET', 'POST'],
                       allow_headers=['Authorization', 'Content-Type'])

  async def read_body(request: fastapi.Request) -> bytes:
    """The body, stopping at the size limit (bodies without a length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
      size += len(chunk)
      if size > settings.max_body_bytes:
        raise RequestError(413, f'body larger than the limit of '
                           f'{settings.max_body_bytes} bytes')
      chunks.append(chunk)
    return b''.join(chunks)

  async def image_and_people(request: fastapi.Request):
    kind = request.headers.get('content-type', '').split(';')[0].strip()
    boxes = request.query_params.get('boxes')
    poses = request.query_params.get('poses')
    body = await read_body(request)
    if kind == 'multipart/form-data':
      request._body = body  # pylint: disable=protected-access
      try:
        form = await request.form(max_files=1, max_fields=4)
      except Exception as e:  # pylint: disable=broad-except
        raise RequestError(400, f'malformed multipart form ({e})') from e
      upload = form.get('image')
      if upload is None or isinstance(upload, str):
        raise RequestError(400, 'multipart form: no file field "image"')
      body = await upload.read()
      boxes = form.get('boxes', boxes)
      poses = form.get('poses', poses)
    elif kind not in IMAGE_TYPES:
      raise RequestError(415, f'content type {kind or "(none)"!r}: send an '
                         'image (image/jpeg, image/png, ...) or a multipart '
                         'form with an "image" file')
    image = await concurrency.run_in_threadpool(decode_image, body,
                                                settings.max_pixels)
    joints = len((service.model.metadata.get('skeleton') or {}).get(
        'joint_names', ()))
    return (image, parse_people(boxes, 'boxes', [(4,), (5,)]),
            parse_people(poses, 'poses', [(joints, 3)]))

  @app.exception_handler(RequestError)
  async def request_error(request, e: RequestError):
    del request
    return error(e.status, str(e))

  @app.post('/v1/predict')
  async def predict(request: fastapi.Request, draw: bool = False):
    with service.coming():
      image, boxes, poses = await image_and_people(request)
      result = await service.predict(image, boxes, poses)
    if draw:
      drawn = await concurrency.run_in_threadpool(
          lambda: results_lib.jpeg(results_lib.draw(
              image, result, service.model.metadata,
              settings.keypoint_threshold)))
      return fastapi.Response(drawn, media_type='image/jpeg')
    return await concurrency.run_in_threadpool(
        results_lib.to_json, result, service.model.metadata)

  @app.websocket('/v1/stream')
  async def stream(websocket: fastapi.WebSocket, draw: bool = False):
    origin = websocket.headers.get('origin')
    if (settings.token and not hmac.compare_digest(
        _token_of(websocket) or '', settings.token)) or (
            origin and not _same_origin(origin, websocket.headers.get('host'))
            and origin not in settings.allow_origins):
      await websocket.close(code=1008)
      return
    await websocket.accept()
    recent = collections.deque()
    frame = -1
    try:
      while True:
        data = await websocket.receive_bytes()
        frame += 1
        start = time.perf_counter()
        while recent and start - recent[0] > 1.0:
          recent.popleft()
        if len(recent) >= settings.max_fps:
          metrics.frames.labels('dropped').inc()
          await websocket.send_json({
              'frame': frame, 'error': f'more than {settings.max_fps:g} '
                                       'frames a second: frame dropped'})
          continue
        recent.append(start)
        try:
          with service.coming():
            image = await concurrency.run_in_threadpool(
                decode_image, data, settings.max_pixels)
            result = await service.predict(image)
        except RequestError as e:
          metrics.frames.labels('bad').inc()
          await websocket.send_json({'frame': frame, 'error': str(e)})
          continue
        reply = await concurrency.run_in_threadpool(
            results_lib.to_json, result, service.model.metadata,
            overlay=True)
        reply.update(frame=frame,
                     server_ms=round((time.perf_counter() - start) * 1000, 2))
        await websocket.send_json(reply)
        if draw:
          await websocket.send_bytes(await concurrency.run_in_threadpool(
              lambda: results_lib.jpeg(results_lib.draw(
                  image, result, service.model.metadata,
                  settings.keypoint_threshold))))
        metrics.frames.labels('answered').inc()
    except fastapi.WebSocketDisconnect:
      pass
    except KeyError:  # a text message where a frame was expected
      await websocket.close(code=1003)

  @app.get('/healthz')
  async def healthz():
    return {'status': 'ok', 'compilations': service.model.compilations}

  @app.get('/metrics')
  async def prometheus_metrics():
    return fastapi.Response(prometheus_client.generate_latest(
        metrics.registry), media_type=prometheus_client.CONTENT_TYPE_LATEST)

  @app.get('/v1/model')
  async def model_info():
    return service.model_info()

  @app.get('/')
  async def page():
    return responses.HTMLResponse(_static('index.html'))

  @app.get('/static/{name}')
  async def static(name: str):
    if name not in ('camera.js',):
      raise RequestError(404, f'no static file {name!r}')
    return fastapi.Response(_static(name), media_type='text/javascript')

  return app


def check_binding(host: str, token: str | None) -> None:
  """Listening beyond this machine needs a token."""
  if host not in ('127.0.0.1', 'localhost', '::1') and not token:
    raise exported_lib.ExportError(
        f'--host={host} listens beyond this machine: set a token '
        '(--token or HPE_JAX_SERVE_TOKEN) that every request must carry')
