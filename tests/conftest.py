"""Shared pytest fixtures: the real data, and tiny training configs."""

import importlib.util
import os
import pathlib

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
  for key, value in overrides.items():
    target = config
    *path, last = key.split('.')
    for p in path:
      target = target[p]
    target[last] = value
  return config


@pytest.fixture(scope='session')
def tiny_config():
  """Builds a one-stack, 16-feature hourglass config on 32x32 crops."""
  return make_tiny_config
