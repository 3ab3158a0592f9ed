"""benchmarks/gpu_check.sh, the one-call GPU check, end to end on CPU at its
TINY sizes: every step runs, and the figures and files come back in OUT."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.skipif(shutil.which('bash') is None or
                    shutil.which('timeout') is None,
                    reason='needs bash and coreutils timeout')
def test_gpu_check_runs_end_to_end_at_tiny_size(tmp_path):
  out = tmp_path / 'out'
  top_level_before = set(os.listdir(ROOT))
  env = dict(os.environ, TINY='1', OUT=str(out), PYTHON=sys.executable,
             # No wheels to install: this interpreter has the packages.
             WHEEL_DIR=str(tmp_path / 'no_wheels'), TMPDIR=str(tmp_path))
  proc = subprocess.run(['bash', 'benchmarks/gpu_check.sh'], cwd=ROOT,
                        env=env, capture_output=True, text=True,
                        timeout=900)
  assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]

  summary = (out / 'summary.txt').read_text().splitlines()
  assert not [line for line in summary if line.startswith('FAILED')], summary
  bench = [line for line in summary if 'hpe_jax.benchmark' in line]
  # Train and eval step of the (tiny) paper hourglass and of 2 stacks.
  assert len(bench) == 4, summary
  assert all('images/s' in line and 'bfloat16' in line for line in bench)
  assert any('hourglass 1 stacks' in line for line in bench)
  assert any('hourglass 2 stacks' in line for line in bench)
  for stacks in (1, 2):
    result = json.loads((out / f'benchmark_{stacks}stacks.json').read_text())
    assert result['train_images_per_s'] > 0 and result['dtype'] == 'bfloat16'
  twin = [line for line in summary if 'hourglass_vs_torch.py' in line]
  assert twin, summary  # figures, or SKIPPED where torch is missing
  assert any('training run' in line for line in summary), summary
  assert any('evaluation of step 4' in line for line in summary), summary

  metrics = [json.loads(line) for line in
             (out / 'metrics.jsonl').read_text().splitlines()]
  assert metrics[-1]['step'] == 4
  evaluation = json.loads((out / 'eval.json').read_text())
  assert evaluation['step'] == 4 and evaluation['metrics']
  assert 'jax backend:' in (out / 'env.txt').read_text()

  # What comes back from the device machine: at most 8 files, no folders.
  kept = list(out.iterdir())
  assert len(kept) <= 8 and all(p.is_file() for p in kept), kept
  # Nothing was written into the checkout; the scratch folder is gone.
  assert set(os.listdir(ROOT)) == top_level_before
  assert not list(tmp_path.glob('gpu_check.*'))
