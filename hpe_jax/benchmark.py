"""Measures training and evaluation speed, memory, FLOPs and input throughput.

  python -m hpe_jax.benchmark --config=configs/X.py[:arg] [--steps=N] \
      [--output=benchmark.json] [--config.key=value ...]

After compiling and a few warm-up steps it times the jitted train step (on
one batch held on the devices, so the input pipeline is out of the picture)
and the jitted evaluation step (the model, plus the flip test if the config
has it, plus decoding). XLA's cost analysis gives the FLOPs of one training
and one evaluation image; with the device's peak FLOP/s (known for common
GPUs and TPUs) it reports the fraction of peak reached. Separately it times
the input pipeline alone, with the config's worker processes, so one can see
whether training is input-bound. It prints a table and writes it as JSON.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags
import jax
from ml_collections import config_flags

from hpe_jax import cli
from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.data import throughput
from hpe_jax.models import registry
from hpe_jax.runtime import sharding
from hpe_jax.training import optimizers
from hpe_jax.training import train_state
from hpe_jax.training import trainer

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Recipe file, e.g. configs/hourglass.py.',
    lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps.')
_WARMUP = flags.DEFINE_integer('warmup', 3, 'Steps run before timing.')
_INPUT_BATCHES = flags.DEFINE_integer(
    'input_batches', 10, 'Batches timed for the input pipeline (0: skip).')
_OUTPUT = flags.DEFINE_string('output', 'benchmark.json', 'JSON to write.')

# Dense peak FLOP/s by device kind (substring match) and compute dtype, from
# the vendors' data sheets; None where unknown (then no fraction of peak).
PEAK_FLOPS = {
    'H200': {'bfloat16': 989e12, 'float32': 67e12},
    'H100': {'bfloat16': 989e12, 'float32': 67e12},
    'A100': {'bfloat16': 312e12, 'float32': 19.5e12},
    'TPU v4': {'bfloat16': 275e12},
    'TPU v5 lite': {'bfloat16': 197e12},
    'TPU v5e': {'bfloat16': 197e12},
    'TPU v5p': {'bfloat16': 459e12},
    'TPU v6': {'bfloat16': 918e12},
}


def device_peak_flops(device_kind: str, dtype: str) -> float | None:
  for kind, peaks in PEAK_FLOPS.items():
    if kind in device_kind:
      return peaks.get(dtype)
  return None


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call on ONE device, from XLA's cost analysis.

  A program sharded over a mesh is compiled per device (SPMD), so its cost
  analysis counts one device's share.
  """
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def per_image_gflops(device_flops: float | None, batch_size: int):
  if device_flops is None:
    return None
  return device_flops * jax.device_count() / batch_size / 1e9


def time_calls(fn, args_fn, steps: int, warmup: int) -> float:
  """Seconds per call of `fn(*args_fn())`, after warm-up, synchronised."""
  out = None
  for _ in range(warmup):
    out = fn(*args_fn())
  jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    out = fn(*args_fn())
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def peak_memory_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats()
  return None if not stats else stats.get('peak_bytes_in_use')


class CompiledSteps:
  """The jitted train and evaluation steps of a config, compiled, on one
  training batch held on the devices (the input pipeline out of the
  picture). `train` runs one step, `evaluate` one evaluation batch."""

  def __init__(self, config):
    self.mesh = mesh = sharding.make_mesh()
    self.train_data = datasets.build(config.dataset, 'train')
    task = tasks.make(config)
    model = registry.build_for_run(config, self.train_data.skeleton)
    tx, lr_fn = optimizers.make_optimizer(config.optimizer,
                                          config.total_steps)
    self.state = train_state.create(model, tx, task, config, mesh)
    self.local_batch_size = sharding.per_process_batch_size(
        config.input.batch_size, mesh)
    self.batch = sharding.to_global(next(iter(pipeline.train_dataset(
        self.train_data, config.input, seed=config.seed,
        batch_size=self.local_batch_size))), mesh)
    step_fn = trainer.make_train_step(config, model, tx, lr_fn, mesh)
    self.sums = jax.device_put(
        trainer.zero_metric_sums(step_fn, self.state, self.batch),
        sharding.replicated(mesh))
    t0 = time.perf_counter()
    self.compiled_train = step_fn.lower(self.state, self.batch,
                                        self.sums).compile()
    self.compile_s = time.perf_counter() - t0
    predict = task.make_evaluator(
        config, datasets.build(config.dataset, 'eval'), model, mesh
    ).predict_fn
    self.compiled_eval = predict.lower(self.state.variables,
                                       self.batch).compile()

  def train(self):
    self.state, self.sums = self.compiled_train(self.state, self.batch,
                                                self.sums)
    return self.sums['loss']

  def evaluate(self):
    return self.compiled_eval(self.state.variables, self.batch)


def run(config, steps: int, warmup: int, input_batches: int) -> dict:
  """All the measurements of the module docstring, as a flat dict."""
  compiled = CompiledSteps(config)
  batch_size = config.input.batch_size
  train_flops = compiled_flops(compiled.compiled_train)
  step_s = time_calls(compiled.train, tuple, steps, warmup)
  eval_flops = compiled_flops(compiled.compiled_eval)
  eval_s = time_calls(compiled.evaluate, tuple, steps, warmup)

  device = jax.devices()[0]
  peak = device_peak_flops(device.device_kind, config.model.dtype)
  result = dict(
      device=f'{jax.device_count()} x {device.device_kind}',
      platform=device.platform,
      model=config.model.name, dtype=config.model.dtype,
      image_size=list(config.input.image_size), batch_size=batch_size,
      compile_s=compiled.compile_s,
      train_step_ms=1000 * step_s,
      train_images_per_s=batch_size / step_s,
      eval_images_per_s=batch_size / eval_s,
      eval_flip_test=bool(config.eval.flip),
      train_gflops_per_image=per_image_gflops(train_flops, batch_size),
      eval_gflops_per_image=per_image_gflops(eval_flops, batch_size),
      peak_memory_gib=None if (m := peak_memory_bytes()) is None else
      m / 2**30,
      device_peak_tflops=None if peak is None else peak / 1e12,
  )
  if peak and train_flops:
    result['train_fraction_of_peak'] = train_flops / step_s / peak
  if input_batches:
    result['input_images_per_s'] = throughput.measure(
        compiled.train_data, config.input, seed=config.seed,
        batch_size=compiled.local_batch_size,
        batches=input_batches, warmup=2)['examples_per_s']
    result['input_workers'] = config.input.num_workers
  return result


def format_table(result: dict) -> str:
  rows = []
  for key, value in result.items():
    if isinstance(value, float):
      value = f'{value:.4g}'
    rows.append(f'  {key:26s} {value}')
  return '\n'.join(rows)


def main(argv):
  del argv
  cli.setup_logging()
  config = cli.config_value(_CONFIG)
  cli.output_folder(os.path.dirname(_OUTPUT.value) or '.')
  result = run(config, _STEPS.value, _WARMUP.value, _INPUT_BATCHES.value)
  print(format_table(result))
  with open(_OUTPUT.value, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'written: {_OUTPUT.value}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  cli.run(main)
