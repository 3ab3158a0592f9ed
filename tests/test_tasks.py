"""The task interface: a task added as one module runs through the normal
train, evaluate and predict commands; no command branches on task names."""

import json
import os
import pathlib
import subprocess
import sys

import cv2
import pytest

from hpe_jax import tasks
from hpe_jax.data import synthetic
from hpe_jax.runtime import metric_writer
from conftest import ROOT

TESTS = pathlib.Path(__file__).resolve().parent


def _run(module, *flags):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      filter(None, [str(TESTS), os.environ.get('PYTHONPATH')])))
  proc = subprocess.run([sys.executable, '-m', module, *flags], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return proc.stdout


def test_toy_task_trains_evaluates_and_predicts(tmp_path):
  workdir = tmp_path / 'run'
  _run('hpe_jax.main', '--config=tests/toy_task.py', f'--workdir={workdir}')
  lines = metric_writer.read_metrics(str(workdir))
  assert [l['step'] for l in lines if 'train/loss/bce' in l] == [2, 4, 6]
  evals = [l['eval/foreground_accuracy'] for l in lines
           if 'eval/foreground_accuracy' in l]
  assert len(evals) == 2 and all(0 <= a <= 1 for a in evals)

  out = _run('hpe_jax.evaluate', f'--workdir={workdir}')
  assert 'foreground_accuracy' in out
  saved = json.loads((workdir / 'eval' / 'step6.json').read_text())
  assert saved['metrics']['foreground_accuracy'] == pytest.approx(evals[-1])

  synthetic.export(str(tmp_path / 'data'), 2, seed=1, image_size=(40, 48))
  _run('hpe_jax.predict', f'--workdir={workdir}',
       f'--input={tmp_path / "data" / "images"}',
       f'--output={tmp_path / "out"}')
  labels = cv2.imread(str(tmp_path / 'out' / '000000000001_foreground.png'),
                      cv2.IMREAD_UNCHANGED)
  drawn = cv2.imread(str(tmp_path / 'out' / '000000000001.png'))
  assert labels.shape == (40, 48) and labels.max() <= 1
  assert drawn.shape == (40, 48, 3)


def test_unknown_task_names_are_errors():
  with pytest.raises(ValueError, match='task must be one of'):
    tasks.get('detection')
  with pytest.raises(ValueError, match='defines no TASK'):
    tasks.get('conftest')


def test_no_command_branches_on_task_names():
  names = '|'.join(tasks.BUILTIN)
  offenders = []
  for path in list((ROOT / 'hpe_jax').rglob('*.py')) + list(
      (ROOT / 'launch').glob('*.py')):
    if 'tasks' in path.relative_to(ROOT).parts:
      continue
    for number, line in enumerate(path.read_text().splitlines(), 1):
      code = line.split('#')[0]
      if ('task' in code and any(f"'{n}'" in code for n in names.split('|'))
          and ('==' in code or ' in (' in code or '!=' in code)):
        offenders.append(f'{path.relative_to(ROOT)}:{number}: {line.strip()}')
  assert not offenders, '\n'.join(offenders)


def test_evaluation_does_not_import_training():
  for path in (ROOT / 'hpe_jax' / 'evaluation').glob('*.py'):
    assert 'hpe_jax.training' not in path.read_text(), path
