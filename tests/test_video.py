"""Video in and out: the predict command on a video file (every frame
drawn and recorded, a damaged frame ends it, wrong inputs refused in one
line) and the streaming client against the real server
(`python -m hpe_jax.serve`) on a tiny exported keypoint model."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hpe_jax.data import synthetic
from hpe_jax.data import video
from conftest import free_port
from conftest import ROOT
from conftest import Server

FRAMES, SIZE, FPS = 12, 64, 10.0
# The export is for cpu only; a GPU here would only slow the start.
ENV = {**os.environ, 'JAX_PLATFORMS': 'cpu'}


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-m', *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=timeout)


def _read_video(path) -> list[np.ndarray]:
  capture = cv2.VideoCapture(str(path))
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      return frames
    frames.append(frame)


@pytest.fixture(scope='module')
def clip(tmp_path_factory):
  """A short video of synthetic people."""
  path = tmp_path_factory.mktemp('video') / 'clip.mp4'
  people = synthetic.SyntheticPeople(FRAMES, seed=1,
                                     image_size=(SIZE, SIZE))
  with video.VideoWriter(str(path), FPS) as writer:
    for i in range(FRAMES):
      writer.write(people[i]['image'])
  return path


@pytest.fixture(scope='module')
def server(tiny_export, tmp_path_factory):
  """The base URL of the server on the tiny export."""
  running = Server(tiny_export, log_dir=tmp_path_factory.mktemp('server'))
  yield running.url
  running.stop()


def _one_line(proc: subprocess.CompletedProcess) -> str:
  assert proc.returncode == 1, proc.stdout + proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  return lines[0]


def test_predict_draws_and_records_every_frame(tiny_run, clip, tmp_path):
  out = tmp_path / 'out'
  proc = _run('hpe_jax.predict', f'--workdir={tiny_run}', f'--input={clip}',
              f'--output={out}')
  assert proc.returncode == 0, proc.stderr
  assert f'{FRAMES} frames ({FPS:g} fps, {SIZE}x{SIZE}), {FRAMES} people' in (
      proc.stdout)
  drawn = _read_video(out / 'clip.mp4')
  assert len(drawn) == FRAMES
  assert {f.shape for f in drawn} == {(SIZE, SIZE, 3)}
  assert cv2.VideoCapture(str(out / 'clip.mp4')).get(cv2.CAP_PROP_FPS) == FPS
  records = json.loads((out / 'clip.json').read_text())
  assert [r['frame'] for r in records] == list(range(FRAMES))
  assert records[3]['time_s'] == pytest.approx(3 / FPS)
  # Without boxes the whole frame is one person.
  assert all(len(r['people']) == 1 for r in records)
  assert all(len(r['people'][0]['keypoints']) == 17 * 3 for r in records)


def test_a_damaged_frame_ends_the_video(tiny_run, tmp_path):
  """What came before it is written, the frame is named, exit status 1."""
  path = tmp_path / 'damaged.mp4'
  rng = np.random.default_rng(0)
  with video.VideoWriter(str(path), FPS) as writer:
    for _ in range(30):
      writer.write(rng.integers(0, 256, (48, 64, 3), np.uint8))
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + len(data) // 10] = bytes(len(data) // 10)
  path.write_bytes(data)
  out = tmp_path / 'out'
  proc = _run('hpe_jax.predict', f'--workdir={tiny_run}', f'--input={path}',
              f'--output={out}')
  assert proc.returncode == 1, proc.stderr
  done = len(_read_video(out / 'damaged.mp4'))
  assert 0 < done < 30
  assert len(json.loads((out / 'damaged.json').read_text())) == done
  assert f'{path}: frame {done} of 30 could not be decoded' in proc.stdout


def test_predict_refuses_boxes_with_a_video(tiny_run, clip, tmp_path):
  boxes = tmp_path / 'boxes.json'
  boxes.write_text('[]')
  line = _one_line(_run('hpe_jax.predict', f'--workdir={tiny_run}',
                        f'--input={clip}', f'--output={tmp_path / "out"}',
                        f'--boxes={boxes}'))
  assert '--boxes is for image folders, not a video' in line


def test_an_unreadable_video_is_one_line(tiny_run, tmp_path):
  path = tmp_path / 'x.mp4'
  path.write_bytes(np.random.default_rng(0).bytes(5000))
  line = _one_line(_run('hpe_jax.predict', f'--workdir={tiny_run}',
                        f'--input={path}', f'--output={tmp_path / "out"}'))
  assert f'{path}: cannot be opened as a video' in line
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('draw', [False, True])
def test_client_streams_every_frame(server, clip, tmp_path, draw):
  out = tmp_path / 'streamed.mp4'
  proc = _run('hpe_jax.serving.client', f'--server={server}',
              f'--video={clip}', f'--output={out}',
              *(['--draw', '--max_frames=5'] if draw else []))
  frames = 5 if draw else FRAMES
  assert proc.returncode == 0, proc.stderr
  assert f'{frames} frames sent, {frames} answered, 0 errors' in proc.stdout
  drawn = _read_video(out)
  assert len(drawn) == frames
  assert {f.shape for f in drawn} == {(SIZE, SIZE, 3)}
  records = json.loads((tmp_path / 'streamed.json').read_text())
  assert [r['frame'] for r in records] == list(range(frames))
  assert all(len(r['people']) == 1 and 'error' not in r for r in records)


def test_client_without_a_server_is_one_line(clip):
  url = f'http://127.0.0.1:{free_port()}'
  line = _one_line(_run('hpe_jax.serving.client', f'--server={url}',
                        f'--video={clip}'))
  assert f'{url}: cannot reach the server' in line
