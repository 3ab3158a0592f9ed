"""The inference server as users run it (a subprocess on 127.0.0.1):
predictions as JSON and drawn, the WebSocket stream, dynamic batching with
nothing compiled while serving, bad input under concurrent load, the token,
cross-origin refusal, limits, and draining on SIGTERM."""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time

import cv2
import httpx
import numpy as np
import pytest
from websockets.sync import client as ws_client

from conftest import ROOT
from conftest import Server


@pytest.fixture(scope='module')
def server(tiny_export, tmp_path_factory):
  running = Server(tiny_export, '--max_batch=8', '--max_delay_ms=20',
                   '--max_pixels=250000', '--max_body_mb=1', '--max_fps=5',
                   log_dir=tmp_path_factory.mktemp('server'))
  yield running.url
  assert running.stop() == 0, running.log()


def jpeg(height=64, width=48, seed=0) -> bytes:
  image = np.random.default_rng(seed).integers(0, 256, (height, width, 3),
                                               np.uint8)
  return cv2.imencode('.jpg', image)[1].tobytes()


def post(url, body, content_type='image/jpeg', **params):
  return httpx.post(f'{url}/v1/predict', content=body, params=params,
                    headers={'content-type': content_type}, timeout=60)


def metric(url, name) -> float:
  for line in httpx.get(f'{url}/metrics').text.splitlines():
    if line.startswith(name + ' ') or line.startswith(name + '{'):
      return float(line.rsplit(' ', 1)[1])
  raise KeyError(name)


def test_predicts_json_in_coco_conventions_and_drawn_images(server):
  r = post(server, jpeg(), boxes=json.dumps([[2, 2, 40, 60, 0.9],
                                             [10, 5, 30, 50, 0.5]]))
  assert r.status_code == 200, r.text
  body = r.json()
  assert body['image_size'] == [64, 48]
  assert len(body['people']) == 2
  person = body['people'][0]
  assert len(person['keypoints']) == 17 * 3 and len(person['bbox']) == 4
  # Without boxes, the whole image is one person.
  assert len(post(server, jpeg()).json()['people']) == 1
  form = httpx.post(f'{server}/v1/predict',
                    files={'image': ('a.jpg', jpeg(), 'image/jpeg')},
                    data={'boxes': '[[2, 2, 40, 60]]'}, timeout=60)
  assert form.status_code == 200 and len(form.json()['people']) == 1
  drawn = post(server, jpeg(), draw='1')
  assert drawn.headers['content-type'] == 'image/jpeg'
  image = cv2.imdecode(np.frombuffer(drawn.content, np.uint8), 1)
  assert image.shape == (64, 48, 3)
  info = httpx.get(f'{server}/v1/model').json()
  assert info['rows'] == 'boxes' and len(info['skeleton']['joint_names']) == 17


def test_concurrent_requests_are_batched_without_compiling(server):
  compiled = metric(server, 'hpe_jax_compilations')
  assert compiled == 4  # batch sizes 1, 2, 4, 8, all at start-up
  batches = metric(server, 'hpe_jax_batch_rows_count')
  rows = metric(server, 'hpe_jax_batch_rows_sum')
  with concurrent.futures.ThreadPoolExecutor(16) as pool:
    codes = list(pool.map(lambda i: post(server, jpeg(seed=i)).status_code,
                          range(48)))
  assert codes == [200] * 48
  batches = metric(server, 'hpe_jax_batch_rows_count') - batches
  rows = metric(server, 'hpe_jax_batch_rows_sum') - rows
  assert rows == 48
  assert batches < 48 / 2, batches  # merged, about 8 at a time
  assert metric(server, 'hpe_jax_compilations') == compiled


def test_bad_input_gets_a_clear_4xx_while_others_are_served(server):
  good = jpeg()
  big = cv2.imencode('.png', np.zeros((600, 600, 3), np.uint8))[1].tobytes()
  bad = {
      'empty': (b'', 'image/jpeg', {}, 400, 'empty body'),
      'not an image': (b'hello world', 'image/jpeg', {}, 400,
                       'not an image'),
      'truncated': (good[:len(good) // 2], 'image/jpeg', {}, 400,
                    'damaged image'),
      'huge': (big, 'image/png', {}, 413, '600x600 image'),
      'too long': (b'\0' * (2 * 2**20), 'image/png', {}, 413,
                   'body larger than the limit'),
      'content type': (good, 'text/plain', {}, 415, "content type 'text/"),
      'boxes shape': (good, 'image/jpeg', {'boxes': '[[1, 2]]'}, 400,
                      'boxes: expected [N, 4] or [N, 5]'),
      'boxes json': (good, 'image/jpeg', {'boxes': '[[1, 2'}, 400,
                     'boxes: not a rectangular JSON array'),
      'poses': (good, 'image/jpeg', {'poses': '[]'}, 400,
                'poses: this model takes none'),
  }

  def send(item):
    name, (body, kind, params, status, message) = item
    r = post(server, body, kind, **params)
    return name, r.status_code, r.json().get('error', ''), status, message

  items = list(bad.items()) * 2 + [('good', (good, 'image/jpeg', {}, 200,
                                             ''))] * 16
  with concurrent.futures.ThreadPoolExecutor(12) as pool:
    for name, code, error, status, message in pool.map(send, items):
      assert code == status, (name, code, error)
      assert message in error, (name, error)
  # A zero-sized image is refused too.
  header = cv2.imencode('.png', np.zeros((1, 1, 3), np.uint8))[1].tobytes()
  zero = bytearray(header)
  zero[16:24] = bytes(8)  # width and height in the IHDR chunk
  assert post(server, bytes(zero), 'image/png').status_code == 400
  assert httpx.get(f'{server}/healthz').status_code == 200


def test_stream_answers_every_frame_and_caps_the_frame_rate(server):
  ws_url = server.replace('http', 'ws') + '/v1/stream?draw=1'
  with ws_client.connect(ws_url) as ws:
    for i in range(3):
      ws.send(jpeg(seed=i))
      reply = json.loads(ws.recv(timeout=60))
      assert reply['frame'] == i and len(reply['people']) == 1, reply
      assert reply['server_ms'] > 0
      drawn = ws.recv(timeout=60)
      assert cv2.imdecode(np.frombuffer(drawn, np.uint8), 1).shape == (
          64, 48, 3)
    ws.send(b'not an image')
    assert 'not an image' in json.loads(ws.recv(timeout=60))['error']
  with ws_client.connect(server.replace('http', 'ws') + '/v1/stream') as ws:
    for _ in range(12):  # at most 5 a second
      ws.send(jpeg())
    replies = [json.loads(ws.recv(timeout=60)) for _ in range(12)]
  dropped = [r for r in replies if 'frames a second' in r.get('error', '')]
  assert 5 <= len(dropped) <= 7, replies


def test_cross_origin_pages_are_refused(server):
  r = httpx.get(f'{server}/v1/model',
                headers={'origin': 'http://elsewhere.example'})
  assert 'access-control-allow-origin' not in r.headers
  with pytest.raises(Exception):
    with ws_client.connect(server.replace('http', 'ws') + '/v1/stream',
                           origin='http://elsewhere.example') as ws:
      ws.send(jpeg())
      ws.recv(timeout=10)


def test_token_is_required_and_sigterm_drains_requests(tiny_export,
                                                       tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'HPE_JAX_SERVE_TOKEN'}
  refused = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.serve', f'--model={tiny_export}',
       '--host=0.0.0.0'], cwd=ROOT, capture_output=True, text=True,
      timeout=120, env=env)
  assert refused.returncode == 1
  assert refused.stderr.strip().splitlines() == [
      'hpe_jax.serve: --host=0.0.0.0 listens beyond this machine: set a '
      'token (--token or HPE_JAX_SERVE_TOKEN) that every request must carry']
  # A long batching delay keeps requests in flight when SIGTERM comes.
  running = Server(tiny_export, '--token=s3cret', '--max_delay_ms=1500',
                   log_dir=tmp_path)
  url = running.url
  try:
    assert httpx.get(f'{url}/healthz').status_code == 200
    assert post(url, jpeg()).status_code == 401
    assert httpx.get(f'{url}/').status_code == 401
    assert httpx.get(f'{url}/metrics').status_code == 401
    ok = httpx.post(f'{url}/v1/predict', content=jpeg(), timeout=60,
                    headers={'content-type': 'image/jpeg',
                             'authorization': 'Bearer s3cret'})
    assert ok.status_code == 200
    with pytest.raises(Exception):
      with ws_client.connect(url.replace('http', 'ws') + '/v1/stream') as ws:
        ws.send(jpeg())
        ws.recv(timeout=10)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      pending = [pool.submit(post, url, jpeg(seed=i), token='s3cret')
                 for i in range(4)]
      time.sleep(0.5)
      running.proc.send_signal(signal.SIGTERM)
      codes = [p.result().status_code for p in pending]
    assert codes == [200] * 4
    assert running.proc.wait(timeout=60) == 0
  finally:
    running.stop()
