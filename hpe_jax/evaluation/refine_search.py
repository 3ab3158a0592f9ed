r"""Coarse-to-fine search of the dense CRF's params for a trained run.

  python -m hpe_jax.evaluation.refine_search --workdir=RUN \
      [--checkpoint=latest|best|STEP] [--max_examples=N] [--window=11] \
      [--iterations=5] [--rounds=3] [--config.key=value ...]

For pose_mask runs and person-mask segmentation runs (two classes). The
run is loaded like ``hpe_jax.evaluate`` loads it; the model runs once over
the evaluation split (the crops of its people, or its images) and keeps its
class probabilities, the images resized to the mask grid and the
ground-truth masks (`collect`). Then `search` scores a grid of
`dense_crf.CrfParams`, each setting over every example, by the mean
per-person mask IoU of `SegmentationMetrics(2)` (``mask_iou``):

* round 1: `POINTS` log-spaced values of each parameter over `coarse_axes`
  (3^5 = 243 settings);
* each further round: the best value so far times ``step^-1, 1, step`` per
  parameter, the step the square root of the round before's.

The grid runs as batches of settings x images, ``jax.vmap`` over the
params (`score_params`): one compiled program for the whole search.

The command prints the unrefined IoU, each round's best IoU and params, and
the CRF's time per image at the chosen params, and writes
``RUN/refine_search.json``::

  {"crf": {<CrfParams fields>}, "window": 11, "iterations": 5,
   "mask_iou": {"unrefined": ..., "refined": ...}, "examples": N,
   "seconds_per_image": ..., "step": ..., "rounds": [...]}

which `dense_crf.load_params` reads. The params are the best found even
when they do not beat the unrefined masks; compare the two IoUs.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import sys
import time
from typing import Sequence

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax import cli
from hpe_jax import errors
from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.data import skeletons
from hpe_jax.evaluation import batched_prediction
from hpe_jax.refinement import dense_crf
from hpe_jax.refinement import refine_option
from hpe_jax.runtime import storage
from hpe_jax.tasks import pose_mask
from hpe_jax.tasks import segmentation

POINTS = 3
# Settings x images of one vmapped call are sized so that their CRF
# kernels ([window^2 / 2, h, w] float32 each, about a third of the memory
# in use) stay within this.
MEMORY_BUDGET = 512 * 2 ** 20


def coarse_axes(window: int) -> dict[str, tuple[float, float]]:
  """(low, high) of each CrfParams field for the coarse round.

  The kernel is not normalised: a weight is nats per unit of kernel, and
  the kernel sums to ~2 pi sigma^2 over a window that holds it. The
  bilateral kernel's width is bounded by the window (beyond ~window / 2
  the truncation, not sigma, sets its reach).
  """
  return dict(spatial_weight=(0.1, 3.0), spatial_sigma=(0.5, window / 4),
              bilateral_weight=(0.01, 1.0),
              bilateral_sigma_xy=(window / 8, window / 2),
              bilateral_sigma_rgb=(5.0, 80.0))


@dataclasses.dataclass
class Collected:
  """A model's outputs on evaluation examples, on the mask grid.

  Attributes:
    probs: float32 [N, h, w, 2] (background, person) probabilities.
    images: float32 [N, h, w, 3] the model's input on the mask grid, as
      the CRF sees it in evaluation (`refine_option.crf_images`).
    masks: uint8 [N, h, w] ground truth, `skeletons.IGNORE_LABEL` unknown.
  """
  probs: np.ndarray
  images: np.ndarray
  masks: np.ndarray

  def __len__(self):
    return len(self.masks)


def probability_function(task, model, skeleton, flip: bool):
  """(variables, batch) -> {'class_probs': [B, h, w, 2]}: the predict step
  of a run's task, as evaluation runs it (flip test included)."""
  if isinstance(task, pose_mask.PoseMaskTask):
    return pose_mask.predict_function(model, probs=True)
  if (isinstance(task, segmentation.SegmentationTask) and
      task.loss_cfg.mask_target == 'mask' and model.num_classes == 2):
    return segmentation.predict_function(model, skeleton, None, flip,
                                         probs=True)
  raise errors.ConfigError(
      'refine_search refines person masks: a pose_mask run or a segmentation '
      "run with loss.mask_target='mask' (two classes), not a "
      f'{type(task).__name__} run of this config')


def collect(config, model, variables, mesh, dataset,
            max_examples: int = 0) -> Collected:
  """Runs the model over `dataset` (the evaluation split of `config`) and
  keeps the first `max_examples` (0: all) valid examples."""
  predict = batched_prediction.jit_predict(
      probability_function(tasks.make(config), model, dataset.skeleton,
                           config.eval.flip), mesh)
  batches, _ = batched_prediction.eval_batches(
      dataset, config.input, config.input.eval_batch_size, mesh)
  kept = {'probs': [], 'images': [], 'masks': []}
  count = 0
  for host, _ in batched_prediction.host_predictions(
      batches, predict, variables, mesh, ('mask', 'image')):
    rows = np.flatnonzero(host['valid'])
    if max_examples:
      rows = rows[:max_examples - count]
    kept['images'].append(np.asarray(refine_option.crf_images(
        host['image'][rows], host['mask'].shape[1:])))
    kept['probs'].append(host['class_probs'][rows].astype(np.float32))
    kept['masks'].append(host['mask'][rows])
    count += len(rows)
    if max_examples and count >= max_examples:
      break
  if not count:
    raise errors.DataError(f'{dataset.name}: no evaluation example to '
                           'search on')
  return Collected(*(np.concatenate(kept[k])
                     for k in ('probs', 'images', 'masks')))


def mask_counts(labels, masks):
  """Per image (tp, fp, fn, scored) [..., 4] int32 of the person class,
  unknown pixels left out: what `SegmentationMetrics(2)` counts."""
  scored = masks != skeletons.IGNORE_LABEL
  truth = scored & (masks == 1)
  guess = scored & (labels == 1)
  axes = (-2, -1)
  tp = jnp.sum(truth & guess, axes)
  return jnp.stack([tp, jnp.sum(guess & ~truth, axes),
                    jnp.sum(truth & ~guess, axes),
                    jnp.broadcast_to(jnp.sum(scored, axes), tp.shape)],
                   -1).astype(jnp.int32)


def mean_mask_iou(counts) -> np.ndarray:
  """``mask_iou`` of `SegmentationMetrics(2)` from `mask_counts` [..., N, 4]:
  the mean over images with a scored pixel of tp / (tp + fp + fn), 1 when
  both masks are empty; NaN without a scored image."""
  counts = np.asarray(counts, np.int64)
  tp, fp, fn = (counts[..., k].astype(np.float64) for k in range(3))
  union = tp + fp + fn
  iou = np.where(union == 0, 1.0, tp / np.where(union == 0, 1.0, union))
  counted = counts[..., 3] > 0
  with np.errstate(invalid='ignore'):
    return np.sum(np.where(counted, iou, 0.0), -1) / np.sum(counted, -1)


@functools.partial(jax.jit, static_argnames=('window', 'iterations'))
def _grid_counts(probs, images, masks, params, *, window: int,
                 iterations: int):
  """`mask_counts` [P, B, 4] of `dense_crf.refine` under P stacked params."""
  labels = jax.vmap(functools.partial(dense_crf.refine, window=window,
                                      iterations=iterations),
                    in_axes=(None, None, 0))(probs, images, params)
  return mask_counts(labels, masks)


def chunk_sizes(n_settings: int, data: Collected, window: int,
                memory_budget: int = MEMORY_BUDGET) -> tuple[int, int]:
  """(settings, images) per vmapped call within `memory_budget`."""
  h, w = data.masks.shape[1:]
  per_pair = 3 * 4 * h * w * (window * window // 2 + 8)
  pairs = max(1, memory_budget // per_pair)
  images = min(len(data), pairs)
  return max(1, min(n_settings, pairs // images)), images


def _padded(x, n: int, fill):
  if len(x) == n:
    return x
  pad = np.full((n - len(x),) + x.shape[1:], fill, x.dtype)
  return np.concatenate([x, pad])


def score_params(data: Collected, params: Sequence[dense_crf.CrfParams], *,
                 window: int, iterations: int,
                 memory_budget: int = MEMORY_BUDGET) -> np.ndarray:
  """float64 [P] ``mask_iou`` of the CRF under each of `params`, over all
  of `data`.

  Chunks are padded to fixed sizes (padding images have no scored pixel,
  padding settings repeat the last), so every call has one shape.
  """
  settings, batch = chunk_sizes(len(params), data, window, memory_budget)
  counts = np.zeros((len(params), len(data), 4), np.int64)
  for s in range(0, len(params), settings):
    chunk = list(params[s:s + settings])
    stacked = dense_crf.stack_params(chunk + chunk[-1:] * (settings -
                                                           len(chunk)))
    for b in range(0, len(data), batch):
      rows = slice(b, min(b + batch, len(data)))
      n = rows.stop - rows.start
      got = _grid_counts(
          _padded(data.probs[rows], batch, 0.5),
          _padded(data.images[rows], batch, 0),
          _padded(data.masks[rows], batch, skeletons.IGNORE_LABEL), stacked,
          window=window, iterations=iterations)
      counts[s:s + len(chunk), rows] = np.asarray(got)[:len(chunk), :n]
  return mean_mask_iou(counts)


def unrefined_iou(data: Collected) -> float:
  """``mask_iou`` of the network's own masks (argmax of the probs)."""
  labels = np.argmax(data.probs, -1)
  return float(mean_mask_iou(np.asarray(mask_counts(labels, data.masks))))


def _log_grid(low: float, high: float, points: int) -> list[float]:
  if low == high or points == 1:
    return [float(low)]
  return [float(v) for v in np.geomspace(low, high, points)]


@dataclasses.dataclass
class SearchResult:
  """The best params, their IoU, the unrefined IoU and each round's
  ``{'settings', 'mask_iou', 'crf', 'seconds'}``."""
  best: dense_crf.CrfParams
  mask_iou: float
  unrefined: float
  rounds: list[dict]


def search(data: Collected, *, window: int = 11, iterations: int = 5,
           rounds: int = 3, axes: dict[str, tuple[float, float]] | None = None,
           points: int = POINTS, memory_budget: int = MEMORY_BUDGET,
           log=print) -> SearchResult:
  """The coarse-to-fine search of the module docstring.

  Args:
    data: what `collect` returned.
    window, iterations: of the CRF (fixed during the search).
    rounds: 1 (coarse) or more.
    axes: (low, high) per CrfParams field (`coarse_axes` if None); low ==
      high keeps that field fixed.
    points: values per field in the coarse round.
    memory_budget: see `chunk_sizes`.
    log: called with one line per round.
  """
  if rounds < 1:
    raise ValueError(f'rounds must be at least 1, got {rounds}')
  axes = coarse_axes(window) if axes is None else axes
  fields = dense_crf.CrfParams._fields
  if set(axes) != set(fields) or not all(
      0 < low <= high for low, high in axes.values()):
    raise ValueError(f'axes must give 0 < low <= high for each of {fields}, '
                     f'got {axes}')
  values = {f: _log_grid(*axes[f], points) for f in fields}
  steps = {f: (axes[f][1] / axes[f][0]) ** (1 / max(1, points - 1))
           for f in values}
  scored: dict[dense_crf.CrfParams, float] = {}
  history = []
  best = None
  for round_index in range(rounds):
    grid = [dense_crf.CrfParams(*v) for v in itertools.product(
        *(values[f] for f in fields))]
    todo = [p for p in dict.fromkeys(grid) if p not in scored]
    start = time.perf_counter()
    if todo:
      scored.update(zip(todo, score_params(
          data, todo, window=window, iterations=iterations,
          memory_budget=memory_budget).tolist()))
    seconds = time.perf_counter() - start
    # Ties go to the first setting of the grid's order (smallest values).
    best = max(dict.fromkeys(grid), key=lambda p: scored[p])
    history.append(dict(settings=len(todo), mask_iou=scored[best],
                        crf=dense_crf.params_to_dict(best), seconds=seconds))
    log(f'round {round_index + 1}: {len(todo)} settings in {seconds:.1f} s, '
        f'best mask_iou {scored[best]:.4f} at ' + ', '.join(
            f'{k}={v:.4g}' for k, v in history[-1]['crf'].items()))
    steps = {f: s ** 0.5 for f, s in steps.items()}
    values = {f: (_log_grid(v / steps[f], v * steps[f], 3) if
                  axes[f][0] != axes[f][1] else [v])
              for f, v in zip(fields, best)}
  return SearchResult(best, scored[best], unrefined_iou(data), history)


def seconds_per_image(data: Collected, params: dense_crf.CrfParams, *,
                      window: int, iterations: int,
                      batch: int | None = None) -> float:
  """Wall time of `dense_crf.refine` per image at `params`, jitted and
  compiled beforehand, over `data` in batches of `batch`."""
  _, default_batch = chunk_sizes(1, data, window)
  batch = min(len(data), batch or default_batch)
  run = jax.jit(functools.partial(dense_crf.refine, window=window,
                                  iterations=iterations))
  chunks = [slice(b, b + batch) for b in range(0, len(data) - batch + 1,
                                               batch)]
  run(data.probs[chunks[0]], data.images[chunks[0]], params
      ).block_until_ready()
  start = time.perf_counter()
  for rows in chunks:
    run(data.probs[rows], data.images[rows], params).block_until_ready()
  return (time.perf_counter() - start) / (len(chunks) * batch)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.window < 3 or f.window % 2 != 1:
    raise errors.ConfigError(f'--window={f.window}: must be odd and at '
                             'least 3')
  if f.rounds < 1 or f.iterations < 1:
    raise errors.ConfigError('--rounds and --iterations must be at least 1')
  config, model, variables, step, mesh = cli.load_run()
  dataset = datasets.build(config.dataset, 'eval')
  start = time.perf_counter()
  data = collect(config, model, variables, mesh, dataset, f.max_examples)
  print(f'{dataset.name} eval split, checkpoint step {step}: {len(data)} '
        f'examples on a {data.masks.shape[1]}x{data.masks.shape[2]} mask '
        f'grid, model run in {time.perf_counter() - start:.1f} s; CRF window '
        f'{f.window}, {f.iterations} iterations')
  result = search(data, window=f.window, iterations=f.iterations,
                  rounds=f.rounds)
  per_image = seconds_per_image(data, result.best, window=f.window,
                                iterations=f.iterations)
  print(f'mask_iou unrefined {result.unrefined:.4f}, refined '
        f'{result.mask_iou:.4f} ({result.mask_iou - result.unrefined:+.4f}); '
        f'CRF {per_image * 1e3:.2f} ms per image at the chosen params')
  if result.mask_iou <= result.unrefined:
    print('the CRF does not improve this run\'s masks at any setting tried')
  summary = dict(
      crf=dense_crf.params_to_dict(result.best), window=f.window,
      iterations=f.iterations,
      mask_iou=dict(unrefined=result.unrefined, refined=result.mask_iou),
      examples=len(data), seconds_per_image=per_image, step=step,
      checkpoint=f.checkpoint, dataset=dataset.name, rounds=result.rounds)
  path = storage.join(f.workdir, dense_crf.SEARCH_FILE)
  path.write_text(json.dumps(summary, indent=2))
  print(f'written: {path}')


def _define_flags():
  # Defined only when run as a program: tests import many commands in one
  # process, and flag names must not clash.
  cli.define_run_flags(sys.argv)
  flags.DEFINE_integer('max_examples', 0,
                       'Evaluation examples to search on (0: all).')
  flags.DEFINE_integer('window', 11, 'Side of the CRF window (odd).')
  flags.DEFINE_integer('iterations', 5, 'Mean-field iterations.')
  flags.DEFINE_integer('rounds', 3,
                       'Search rounds: the coarse grid, then finer ones.')


if __name__ == '__main__':
  _define_flags()
  cli.run(main)
