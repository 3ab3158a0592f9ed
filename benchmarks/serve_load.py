"""Load test of the inference server against the same predictor in process.

  python benchmarks/serve_load.py --config=configs/hourglass.py:smoke \
      [--concurrency=1,4,16] [--seconds=15] [--max_batch=8] \
      [--max_delay_ms=5] [--image_size=480,640]

Exports the recipe's model (freshly initialised: the weights do not change
the speed), then, side by side in one run on the same machine:

1. in process: `hpe_jax.serving.load` on batches of --max_batch JPEG
   images (decode, crop, run, results in image pixels), as a program would
   call it;
2. the server (`python -m hpe_jax.serve`, a subprocess) under closed-loop
   load: at each concurrency, that many clients each send a JPEG, wait for
   the JSON answer and send again, for --seconds.

Prints images/s and latency p50 / p99 per concurrency, and the server's
throughput as a fraction of the in-process images/s. Every request is the
whole image (one person crop for top-down models).
"""

import concurrent.futures
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import cv2
import httpx
from ml_collections import config_flags
import numpy as np

from hpe_jax import serving
from hpe_jax.serving import exporter

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Recipe.')
_CONCURRENCY = flags.DEFINE_list('concurrency', ['1', '4', '16'],
                                 'Clients at a time.')
_SECONDS = flags.DEFINE_float('seconds', 15.0, 'Load per concurrency.')
_MAX_BATCH = flags.DEFINE_integer('max_batch', 8, 'Server batch limit.')
_MAX_DELAY_MS = flags.DEFINE_float('max_delay_ms', 5.0, 'Server batching '
                                   'delay.')
_IMAGE_SIZE = flags.DEFINE_list('image_size', ['480', '640'],
                                'Height, width of the requests\' image.')

ROOT = pathlib.Path(__file__).resolve().parents[1]


def in_process(model, body: bytes, batch: int, seconds: float) -> float:
  """Images/s of decode + prepare + run + finish on batches of `batch`
  JPEG images."""
  model.compile([batch])

  def one_batch():
    rows = [model.prepare(cv2.cvtColor(cv2.imdecode(
        np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
            for _ in range(batch)]
    outputs = model.run({k: np.concatenate([r.batch[k] for r in rows])
                         for k in rows[0].batch})
    for i, r in enumerate(rows):
      model.finish(r, {k: v[i:i + 1] for k, v in outputs.items()})

  one_batch()
  done, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    one_batch()
    done += batch
  return done / (time.perf_counter() - start)


def start_server(path: str, port: int):
  proc = subprocess.Popen(
      [sys.executable, '-m', 'hpe_jax.serve', f'--model={path}',
       f'--port={port}', f'--max_batch={_MAX_BATCH.value}',
       f'--max_delay_ms={_MAX_DELAY_MS.value}'], cwd=ROOT)
  for _ in range(600):
    try:
      httpx.get(f'http://127.0.0.1:{port}/healthz', timeout=1)
      return proc
    except httpx.HTTPError:
      time.sleep(0.5)
  proc.kill()
  raise RuntimeError('the server did not start')


def load(url: str, body: bytes, clients: int, seconds: float):
  """(images/s, latencies in ms) of closed-loop clients."""
  stop = time.perf_counter() + seconds

  def client(_):
    latencies = []
    with httpx.Client(timeout=120) as c:
      while time.perf_counter() < stop:
        t = time.perf_counter()
        r = c.post(url, content=body, headers={'content-type': 'image/jpeg'})
        r.raise_for_status()
        latencies.append(1000 * (time.perf_counter() - t))
    return latencies

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    latencies = sum(pool.map(client, range(clients)), [])
  return len(latencies) / (time.perf_counter() - start), np.array(latencies)


def main(argv):
  del argv
  config = _CONFIG.value
  height, width = map(int, _IMAGE_SIZE.value)
  image = np.random.default_rng(0).integers(0, 256, (height, width, 3),
                                            np.uint8)
  body = cv2.imencode('.jpg', image)[1].tobytes()
  with tempfile.TemporaryDirectory() as tmp:
    model, variables = exporter.untrained(config)
    exporter.export_predictor(config, model, variables, 0, tmp,
                            platforms=('cpu',))
    loaded = serving.load(tmp)
    reference = in_process(loaded, body, _MAX_BATCH.value, _SECONDS.value)
    del loaded
    print(f'{config.model.name} {list(config.input.image_size)} '
          f'{config.model.dtype}, {height}x{width} JPEG requests, '
          f'max_batch {_MAX_BATCH.value}, max_delay {_MAX_DELAY_MS.value} ms')
    print(f'in process: {reference:.1f} images/s')
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
    proc = start_server(tmp, port)
    try:
      for clients in map(int, _CONCURRENCY.value):
        rate, ms = load(f'http://127.0.0.1:{port}/v1/predict', body,
                        clients, _SECONDS.value)
        print(f'concurrency {clients:3d}: {rate:6.1f} images/s '
              f'({rate / reference:.0%} of in process), latency p50 '
              f'{np.percentile(ms, 50):.1f} ms, p99 '
              f'{np.percentile(ms, 99):.1f} ms, {len(ms)} requests')
    finally:
      proc.send_signal(signal.SIGTERM)
      proc.wait(timeout=60)



if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main)
