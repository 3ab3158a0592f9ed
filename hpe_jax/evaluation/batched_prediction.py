"""The evaluation loop every evaluator shares: padded batches through a
jitted predict function, results gathered on the host.

Each process feeds its own padded batches (`eval_batches`); they are
assembled into global arrays over the mesh, predicted by a function jitted
with `jit_predict`, and the outputs plus the requested batch keys come back
as numpy arrays on every host. An `ExampleTally` counts the examples a pass
evaluated and those that were damaged (placeholders): together they must be
every example, and the damaged count is reported as a metric.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import jax
import numpy as np

from hpe_jax import errors
from hpe_jax.data import pipeline
from hpe_jax.runtime import sharding


def eval_batches(dataset, input_cfg, batch_size: int, mesh, detections=None):
  """This process's padded evaluation batches of a global `batch_size`, and
  the number of real examples over all processes (`pipeline.eval_dataset`).
  """
  return pipeline.eval_dataset(
      dataset, input_cfg,
      batch_size=sharding.per_process_batch_size(batch_size, mesh),
      detections=detections, shard_index=jax.process_index(),
      shard_count=jax.process_count())


def jit_predict(predict, mesh):
  """`predict(variables, batch)` jitted over the mesh: variables
  replicated, batch sharded."""
  return jax.jit(predict, in_shardings=(sharding.replicated(mesh),
                                        sharding.batch_sharding(mesh)))


class ExampleTally:
  """Examples evaluated (``valid``) and damaged over one pass."""

  def __init__(self):
    self.seen = self.damaged = 0

  def add(self, host: dict) -> None:
    self.seen += int(host['valid'].sum())
    self.damaged += int(host['damaged'].sum())

  def check(self, expected: int, what: str) -> dict[str, float]:
    """``{'damaged_examples': n}``, once every one of `expected` examples
    was evaluated or found damaged.

    Raises:
      errors.DataError: every example was damaged: nothing to score.
    """
    if self.seen + self.damaged != expected:
      raise RuntimeError(f'evaluated {self.seen} {what} and found '
                         f'{self.damaged} damaged, of {expected}')
    if expected and not self.seen:
      raise errors.DataError(f'all {expected} evaluation {what} are damaged '
                             '(the log names each file)')
    return {'damaged_examples': float(self.damaged)}


def host_predictions(batches: Iterable[dict], predict, variables, mesh,
                     keys: Sequence[str], tally: ExampleTally | None = None
                     ) -> Iterator[tuple[dict, dict]]:
  """Yields (host dict of outputs and `keys`, the global batch) per batch;
  `tally` counts the examples."""
  keys = tuple(dict.fromkeys((*keys, 'valid', 'damaged')))
  for batch in batches:
    global_batch = sharding.to_global(batch, mesh)
    out = predict(variables, global_batch)
    host = {k: sharding.to_host(v) for k, v in out.items()}
    host.update({k: sharding.to_host(global_batch[k]) for k in keys})
    if tally is not None:
      tally.add(host)
    yield host, global_batch


def predict_images(images, input_cfg, batch_size: int, predict, variables,
                   mesh, result_of, keys: Sequence[str] = ()) -> list:
  """One result per image of unlabelled full-image `images`, in order
  (None for a damaged image).

  `result_of(annotation, host, i)` makes the result of row `i` of a host
  batch (`host_predictions` with ``image_id``, ``affine``, ``valid`` and
  `keys`), whose image has `annotation`.
  """
  annotations = [images.annotation(i) for i in range(len(images))]
  by_id = {ann['image_id']: ann for ann in annotations}
  batches, _ = eval_batches(images, input_cfg, batch_size, mesh)
  found = {}
  for host, _ in host_predictions(batches, predict, variables, mesh,
                                  ('image_id', 'affine', 'valid', *keys)):
    for i in np.flatnonzero(host['valid']):
      ann = by_id[int(host['image_id'][i])]
      found[ann['image_id']] = result_of(ann, host, i)
  return [found.get(ann['image_id']) for ann in annotations]
