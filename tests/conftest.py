"""Shared pytest fixtures: where the real annotated data lives."""

import os
import pathlib

from absl import flags
import pytest

# Grain reads its absl flags in worker processes; programs parse them in
# app.run, tests have no command line to parse.
flags.FLAGS.mark_as_parsed()

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


def pytest_configure(config):
  # pycocotools' mask decoding trips a numpy 2 deprecation inside its own
  # code; nothing of ours to fix.
  config.addinivalue_line(
      'filterwarnings', 'ignore::DeprecationWarning:pycocotools.mask')
