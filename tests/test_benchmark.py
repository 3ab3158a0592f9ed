"""The benchmark command on CPU: it runs and reports consistent figures."""

import json
import subprocess
import sys

from conftest import ROOT, TINY_FLAGS
from hpe_jax import benchmark


def test_benchmark_reports_speed_flops_and_input_throughput(tmp_path):
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.benchmark',
       '--config=configs/hourglass.py:smoke', *TINY_FLAGS, '--steps=2',
       '--warmup=1', '--input_batches=2', f'--output={out}'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  result = json.loads(out.read_text())
  assert result['platform'] == 'cpu' and result['batch_size'] == 8
  assert result['train_images_per_s'] > 0 and result['eval_images_per_s'] > 0
  assert result['input_images_per_s'] > 0
  # Forward + backward costs about three forward passes.
  ratio = result['train_gflops_per_image'] / result['eval_gflops_per_image']
  assert 2 < ratio < 4.5, ratio
  assert 'train_images_per_s' in proc.stdout


def test_peak_flops_lookup():
  assert benchmark.device_peak_flops('NVIDIA H100 80GB HBM3',
                                     'bfloat16') == 989e12
  assert benchmark.device_peak_flops('TPU v5 lite', 'bfloat16') == 197e12
  assert benchmark.device_peak_flops('cpu', 'float32') is None


def test_the_pytorch_twin_benchmark_runs_at_a_tiny_size():
  # torch is optional: the JAX side and the training command's step run
  # everywhere, the twin where torch is installed.
  proc = subprocess.run(
      [sys.executable, 'benchmarks/hourglass_vs_torch.py', '--stacks=2',
       '--features=8', '--depth=1', '--size=32', '--batch=2', '--rounds=1',
       '--steps=1', '--trainer_step'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  rows = {line.split()[0]: line.split()[1:] for line in
          proc.stdout.splitlines() if line.strip()}
  assert float(rows['hpe_jax'][1]) > 0 and float(rows['trainer'][1]) > 0
  if 'hpe_jax/torch' in rows:  # torch installed: the twin ran
    # Same network: the parameter counts printed for both sides agree.
    counts = [line.split()[-1] for line in proc.stdout.splitlines()
              if 'parameters:' in line]
    assert len(set(counts)) == 1 and len(counts) == 3
    assert rows['hpe_jax/torch'][0].endswith('x')
