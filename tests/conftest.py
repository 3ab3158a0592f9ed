"""Shared pytest fixtures: the real data, tiny training configs, a tiny
trained run and its export, and the inference server as a subprocess."""

import importlib.util
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from absl import flags
import pytest

# Grain reads its absl flags in worker processes; programs parse them in
# app.run, tests have no command line to parse.
flags.FLAGS.mark_as_parsed()

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The real datasets sit beside the checkout (../shared/data); they are never
# part of the project, so tests that read them skip where they are absent.
SHARED_DATA = pathlib.Path(os.environ.get(
    'HPE_JAX_SHARED_DATA',
    pathlib.Path(__file__).resolve().parents[1].parent / 'shared' / 'data'))


@pytest.fixture
def shared_data() -> pathlib.Path:
  if not SHARED_DATA.is_dir():
    pytest.skip(f'real data not found at {SHARED_DATA}')
  return SHARED_DATA


def load_recipe(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(
      name, ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


TINY = dict(total_steps=8, log_every=2, checkpoint_every=4, eval_every=0,
            eval_at_start=False)
TINY_FLAGS = [
    '--config.model.num_stacks=1', '--config.model.features=16',
    '--config.model.depth=1', '--config.input.image_size=(32,32)',
    '--config.input.batch_size=8', '--config.input.eval_batch_size=8',
    '--config.dataset.synthetic.num_train=64',
    '--config.dataset.synthetic.num_eval=8',
    '--config.dataset.synthetic.image_size=(64,64)',
    '--config.input.num_threads=1',
]


def make_tiny_config(**overrides):
  config = load_recipe('hourglass', 'smoke')
  config.model.update(num_stacks=1, features=16, depth=1)
  config.input.update(image_size=(32, 32), batch_size=8, eval_batch_size=8,
                      num_threads=1)
  config.dataset.synthetic.update(num_train=64, num_eval=8,
                                  image_size=(64, 64))
  config.update(TINY)
  return override(config, overrides)


def override(config, fields: dict):
  """`config` with dotted `fields` ('model.features': 8, ...) set."""
  for key, value in fields.items():
    target = config
    *path, last = key.split('.')
    for p in path:
      target = target[p]
    target[last] = value
  return config


# One tiny model per task, on 32x32 inputs: exports and serving tests,
# where the weights do not matter.
TINY_MODELS = {
    'keypoints': ('hourglass', 'smoke', {
        'model.num_stacks': 1, 'model.features': 8, 'model.depth': 1,
        'input.image_size': (32, 32), 'eval.flip': True}),
    'segmentation': ('unet_multitask', 'triple,smoke', {
        'model.features': 4, 'model.levels': 2, 'input.image_size': (32, 32),
        'eval.flip': True}),
    'pose_mask': ('pose_mask', 'smoke', {
        'model.features': 4, 'input.image_size': (32, 32)}),
    'part_rcnn': ('part_rcnn', 'smoke', {
        'model.features': 8, 'model.levels': 1, 'model.head_features': 8,
        'model.head_convs': 1, 'input.image_size': (32, 32)}),
}


def tiny_model_config(task: str, dtype: str = 'float32'):
  """The config of `task`'s tiny model (`TINY_MODELS`) in `dtype`."""
  name, arg, fields = TINY_MODELS[task]
  return override(load_recipe(name, arg), {
      'dataset.synthetic.num_train': 8, 'dataset.synthetic.num_eval': 4,
      'input.num_threads': 1, **fields, 'model.dtype': dtype})


@pytest.fixture(scope='session')
def tiny_config():
  """Builds a one-stack, 16-feature hourglass config on 32x32 crops."""
  return make_tiny_config


@pytest.fixture(scope='session')
def synthetic_images(tmp_path_factory):
  """Two synthetic 48x64 images exported as COCO (``images/``,
  ``annotations.json``) and their people as keypoint results
  (``poses.json``, every person score 1)."""
  from hpe_jax.data import synthetic  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp('synthetic_images')
  synthetic.export(str(root), 2, seed=5, image_size=(48, 64))
  with open(root / 'annotations.json') as f:
    coco = json.load(f)
  poses = [dict(image_id=a['image_id'], category_id=1, score=1.0,
                keypoints=a['keypoints']) for a in coco['annotations']]
  with open(root / 'poses.json', 'w') as f:
    json.dump(poses, f)
  return root


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """The workdir of a tiny keypoint run (`make_tiny_config`, 8 steps)."""
  from hpe_jax.training import trainer  # pylint: disable=import-outside-toplevel
  workdir = tmp_path_factory.mktemp('tiny_run')
  trainer.train_and_evaluate(make_tiny_config(), str(workdir))
  return workdir


@pytest.fixture(scope='session')
def tiny_export(tiny_run, tmp_path_factory):
  """`tiny_run` exported for the CPU by the export command."""
  out = tmp_path_factory.mktemp('tiny_export')
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.export', f'--workdir={tiny_run}',
       f'--output={out}', '--platforms=cpu'], cwd=ROOT, capture_output=True,
      text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  return out


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def http_status(url: str) -> int:
  try:
    with urllib.request.urlopen(url, timeout=5) as response:
      return response.status
  except urllib.error.HTTPError as e:
    return e.code


class Server:
  """`python -m hpe_jax.serve --model=EXPORT FLAGS` on 127.0.0.1, started
  and answering /healthz; its output goes to a log file in `log_dir`."""

  START_S = 180  # loading the export, compiling every batch size

  def __init__(self, export, *flags_, log_dir):
    port = free_port()
    self.url = f'http://127.0.0.1:{port}'
    self._log = open(pathlib.Path(log_dir) / f'server-{port}.log', 'w+')  # pylint: disable=consider-using-with
    # The exports are for the CPU; a GPU would only slow the start.
    self.proc = subprocess.Popen(
        [sys.executable, '-m', 'hpe_jax.serve', f'--model={export}',
         f'--port={port}', *flags_], cwd=ROOT,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, stdout=self._log,
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + self.START_S
    while True:
      if self.proc.poll() is not None:
        pytest.fail(f'the server exited ({self.proc.returncode}):\n'
                    f'{self.log()}')
      try:
        if http_status(self.url + '/healthz') == 200:
          return
      except OSError:
        pass  # not listening yet
      if time.monotonic() > deadline:
        self.stop()
        pytest.fail(f'no /healthz answer in {self.START_S} s:\n'
                    f'{self.log()}')
      time.sleep(0.3)

  def log(self) -> str:
    self._log.seek(0)
    return self._log.read()

  def stop(self) -> int:
    """SIGTERM (it finishes the requests in flight), SIGKILL after 60 s;
    the exit status."""
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    return self.proc.returncode
