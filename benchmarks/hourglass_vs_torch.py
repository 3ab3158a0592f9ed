"""Stacked hourglass training and evaluation speed: hpe_jax vs a PyTorch twin.

  python benchmarks/hourglass_vs_torch.py [--stacks=2 --features=32 \
      --depth=2 --size=64 --batch=32] [--rounds=5 --steps=3] [--threads=2] \
      [--device=cpu|cuda] [--dtype=float32|bfloat16]

Both sides train the same network (`hpe_jax.models.hourglass` and
`TorchHourglass` below: pre-activation bottleneck residuals, 7x7/2 stem,
2x2 max-pool, nearest upsampling, merge convs; the parameter counts are
printed and must agree) with Adam and a mean squared error on every stack's
heatmaps against fixed random targets, in float32 (``--dtype=bfloat16``:
bf16 computation with float32 parameters on both sides, the JAX model's
``dtype`` and PyTorch's autocast), on one batch held in memory. The JAX
step is `jax.jit`-compiled with the state donated; the PyTorch one runs
eagerly (its usual mode). Evaluation is a forward pass in inference mode.
The two are timed in alternating rounds, so load on the machine hits both
alike; the medians and their ratio are printed (ratio > 1: hpe_jax is
faster). Without torch only the JAX side runs.

``--trainer_step`` also times the training command's own step (the smoke
recipe at the same sizes: heatmap targets rendered on the device from
keypoints, the task's loss, metric sums) and its evaluation step (with
decoding), to show what the command adds to the bare network.

The ``--threads`` setting applies to both: XLA:CPU's thread pool is sized by
the process's CPU affinity, so the script pins itself to that many cores.

``--device=cuda`` runs the PyTorch twin on the GPU (with cuDNN's autotuner
on, ``torch.backends.cudnn.benchmark``, as XLA autotunes its convolutions,
and a ``torch.cuda.synchronize()`` ending each timed call) and JAX on its
default device, which must then be the GPU; nothing is pinned. Each side
keeps its usual memory layout (NHWC for JAX, NCHW for PyTorch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--stacks', type=int, default=2)
  p.add_argument('--features', type=int, default=32)
  p.add_argument('--depth', type=int, default=2)
  p.add_argument('--size', type=int, default=64, help='input side')
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--joints', type=int, default=17)
  p.add_argument('--rounds', type=int, default=5)
  p.add_argument('--steps', type=int, default=3, help='steps per round')
  p.add_argument('--threads', type=int, default=2,
                 help='CPU cores of both sides (--device=cpu only)')
  p.add_argument('--device', choices=('cpu', 'cuda'), default='cpu',
                 help="PyTorch's device; JAX runs on its default device")
  p.add_argument('--dtype', choices=('float32', 'bfloat16'),
                 default='float32', help='computation dtype of both sides')
  p.add_argument('--no_torch', action='store_true')
  p.add_argument('--trainer_step', action='store_true',
                 help="also time the training command's own step (targets "
                 'made from keypoints, metrics) and evaluation step')
  return p.parse_args()


ARGS = _parse() if __name__ == '__main__' else None
if (ARGS is not None and ARGS.device == 'cpu' and
    hasattr(os, 'sched_setaffinity')):
  # Before jax starts its thread pool.
  os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:ARGS.threads])

# pylint: disable=wrong-import-position
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpe_jax.models import hourglass


def jax_side(args):
  """(train step, eval step, parameter count) of the hpe_jax model."""
  model = hourglass.StackedHourglass(
      num_joints=args.joints, num_stacks=args.stacks,
      features=args.features, depth=args.depth, dtype=jnp.dtype(args.dtype))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.standard_normal(
      (args.batch, args.size, args.size, 3), np.float32))
  targets = jnp.asarray(rng.random(
      (args.stacks, args.batch, args.size // 4, args.size // 4, args.joints),
      np.float32))
  variables = model.init(jax.random.key(0), images[:1], train=False)
  params, stats = variables['params'], variables['batch_stats']
  tx = optax.adam(1e-3)
  opt = tx.init(params)

  @jax.jit
  def evaluate(params, stats, images):
    return model.apply({'params': params, 'batch_stats': stats}, images,
                       train=False)['heatmaps'][-1]

  def train(params, stats, opt, images, targets):
    def loss_fn(p):
      out, updated = model.apply({'params': p, 'batch_stats': stats}, images,
                                 train=True, mutable=['batch_stats'])
      return jnp.mean((out['heatmaps'] - targets) ** 2), updated
    (loss, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), updated['batch_stats'],
            opt, loss)

  train = jax.jit(train, donate_argnums=(0, 1, 2))
  state = [params, stats, opt]

  def train_steps(n):
    for _ in range(n):
      *state[:3], loss = train(*state, images, targets)
    loss.block_until_ready()

  def eval_steps(n):
    for _ in range(n):
      out = evaluate(state[0], state[1], images)
    out.block_until_ready()

  count = sum(x.size for x in jax.tree.leaves(params))
  return train_steps, eval_steps, count


def trainer_side(args):
  """(train step, eval step, parameter count) of the training command's own
  step: the smoke recipe at the same sizes, with heatmap targets made on
  the device from a batch of synthetic people, and its evaluation step."""
  # pylint: disable=import-outside-toplevel
  import importlib.util
  from hpe_jax import benchmark

  spec = importlib.util.spec_from_file_location(
      'recipe', os.path.join(os.path.dirname(__file__), '..', 'configs',
                             'hourglass.py'))
  recipe = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(recipe)
  config = recipe.get_config('smoke')
  config.model.update(num_stacks=args.stacks, features=args.features,
                      depth=args.depth)
  config.input.update(image_size=(args.size, args.size),
                      batch_size=args.batch, eval_batch_size=args.batch)
  config.eval.flip = False
  config.model.dtype = args.dtype
  steps = benchmark.CompiledSteps(config)

  def train_steps(n):
    for _ in range(n):
      loss = steps.train()
    jax.block_until_ready(loss)

  def eval_steps(n):
    for _ in range(n):
      out = steps.evaluate()
    jax.block_until_ready(out)

  count = sum(x.size for x in jax.tree.leaves(steps.state.params))
  return train_steps, eval_steps, count


def torch_side(args):
  """(train step, eval step, parameter count) of `TorchHourglass`."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  if args.device == 'cpu':
    torch.set_num_threads(args.threads)
  else:
    torch.backends.cudnn.benchmark = True

  class Residual(nn.Module):
    def __init__(self, cin, cout):
      super().__init__()
      mid = cout // 2
      self.bn1, self.bn2, self.bn3 = (nn.BatchNorm2d(cin),
                                      nn.BatchNorm2d(mid),
                                      nn.BatchNorm2d(mid))
      self.c1 = nn.Conv2d(cin, mid, 1, bias=False)
      self.c2 = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
      self.c3 = nn.Conv2d(mid, cout, 1)
      self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
      y = self.c1(F.relu(self.bn1(x)))
      y = self.c2(F.relu(self.bn2(y)))
      y = self.c3(F.relu(self.bn3(y)))
      return (x if self.skip is None else self.skip(x)) + y

  class Hourglass(nn.Module):
    def __init__(self, depth, c):
      super().__init__()
      self.upper = Residual(c, c)
      self.down = Residual(c, c)
      self.inner = Hourglass(depth - 1, c) if depth > 1 else Residual(c, c)
      self.up = Residual(c, c)

    def forward(self, x):
      lower = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
      return self.upper(x) + F.interpolate(lower, scale_factor=2,
                                           mode='nearest')

  class TorchHourglass(nn.Module):
    def __init__(self, stacks, c, depth, joints):
      super().__init__()
      self.stem = nn.Sequential(
          nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False),
          nn.BatchNorm2d(64), nn.ReLU(), Residual(64, 128), nn.MaxPool2d(2),
          Residual(128, 128), Residual(128, c))
      self.hourglasses = nn.ModuleList(Hourglass(depth, c)
                                       for _ in range(stacks))
      self.heads = nn.ModuleList(nn.Sequential(
          Residual(c, c), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c),
          nn.ReLU()) for _ in range(stacks))
      self.heatmaps = nn.ModuleList(nn.Conv2d(c, joints, 1)
                                    for _ in range(stacks))
      self.merge_features = nn.ModuleList(nn.Conv2d(c, c, 1)
                                          for _ in range(stacks - 1))
      self.merge_heatmaps = nn.ModuleList(nn.Conv2d(joints, c, 1)
                                          for _ in range(stacks - 1))

    def forward(self, x):
      x = self.stem(x)
      out = []
      for i, (hg, head, hm) in enumerate(zip(self.hourglasses, self.heads,
                                             self.heatmaps)):
        y = head(hg(x))
        h = hm(y)
        out.append(h)
        if i < len(self.merge_features):
          x = x + self.merge_features[i](y) + self.merge_heatmaps[i](h)
      return torch.stack(out)

  torch.manual_seed(0)
  device = torch.device(args.device)
  model = TorchHourglass(args.stacks, args.features, args.depth,
                         args.joints).to(device)
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  images = torch.randn(args.batch, 3, args.size, args.size).to(device)
  targets = torch.rand(args.stacks, args.batch, args.joints, args.size // 4,
                       args.size // 4).to(device)

  def autocast():
    return torch.autocast(args.device, dtype=torch.bfloat16,
                          enabled=args.dtype == 'bfloat16')

  def synchronize():
    if args.device == 'cuda':
      torch.cuda.synchronize()

  def train_steps(n):
    model.train()
    for _ in range(n):
      opt.zero_grad(set_to_none=True)
      with autocast():
        loss = F.mse_loss(model(images).float(), targets)
      loss.backward()
      opt.step()
    synchronize()

  def eval_steps(n):
    model.eval()
    with torch.inference_mode(), autocast():
      for _ in range(n):
        model(images)
    synchronize()

  count = sum(p.numel() for p in model.parameters())
  return train_steps, eval_steps, count


def median_seconds(run, steps: int) -> float:
  t0 = time.perf_counter()
  run(steps)
  return (time.perf_counter() - t0) / steps


def main():
  args = ARGS
  sides = {'hpe_jax': jax_side(args)}
  if args.trainer_step:
    sides['trainer'] = trainer_side(args)
  if not args.no_torch:
    try:
      sides['torch'] = torch_side(args)
    except ImportError:
      print('torch is not installed: timing hpe_jax alone')
  where = (f'{args.threads} threads' if args.device == 'cpu' else
           'torch on cuda')
  if args.device == 'cuda' and jax.default_backend() != 'gpu':
    print(f'warning: jax runs on {jax.default_backend()}, not the GPU')
  print(f'hourglass {args.stacks} stacks x {args.features}, depth '
        f'{args.depth}, {args.size}x{args.size}, batch {args.batch}, '
        f'{args.dtype}, {where}, jax {jax.__version__} on '
        f'{jax.devices()[0].platform}')
  for name, (_, _, count) in sides.items():
    print(f'  {name:8s} parameters: {count:,}')
  for name, (train, evaluate, _) in sides.items():
    train(2)  # compile / warm up
    evaluate(2)
  times = {(name, what): [] for name in sides for what in ('train', 'eval')}
  for _ in range(args.rounds):
    for name, (train, evaluate, _) in sides.items():
      times[name, 'train'].append(median_seconds(train, args.steps))
      times[name, 'eval'].append(median_seconds(evaluate, args.steps))
  print(f'{"":10s} {"train step s":>14s} {"train img/s":>12s} '
        f'{"eval img/s":>12s}')
  rates = {}
  for name in sides:
    train = statistics.median(times[name, 'train'])
    evaluate = statistics.median(times[name, 'eval'])
    rates[name] = (args.batch / train, args.batch / evaluate)
    print(f'{name:10s} {train:14.3f} {rates[name][0]:12.1f} '
          f'{rates[name][1]:12.1f}')
  if 'torch' in rates:
    for name in rates:
      if name != 'torch':
        print(f'{name + "/torch":18s} {"":6s} '
              f'{rates[name][0] / rates["torch"][0]:11.2f}x '
              f'{rates[name][1] / rates["torch"][1]:11.2f}x')


if __name__ == '__main__':
  main()
