"""Grain input pipelines: fixed-shape training and evaluation batches.

Training: records (people for top-down, images for full-image mode) are
shuffled with a fixed seed anew each epoch, repeated forever, augmented with
a per-example generator derived from (seed, position) and batched with a
fixed size. Each host process loads only its share of every global batch,
and neither the number of host processes nor of Grain worker processes
changes the global batches. The iterator's position is a small dict
(``iterator.get_state()``) that the training loop checkpoints.

Evaluation: every record once, in order, padded with ``valid=False``
placeholders to whole batches on every process, so each example is counted
exactly once.

A damaged sample (unreadable image or label file) is skipped in training and
becomes an invalid placeholder in evaluation; either way it is logged with
its file name and counted (`damaged_count()`, per process).
"""

from __future__ import annotations

import math
from typing import Any

from absl import logging
import grain
import ml_collections
import numpy as np

from hpe_jax.data import augment
from hpe_jax.data import example as example_lib
from hpe_jax.data import full_image
from hpe_jax.data import top_down
from hpe_jax.data import warp as warp_lib

MODES = ('top_down', 'full_image')

_damaged = {'count': 0}


def default_config() -> ml_collections.ConfigDict:
  """Input defaults; recipes override them under ``config.input``."""
  return ml_collections.ConfigDict(dict(
      mode='top_down',  # or 'full_image'
      batch_size=32,  # global training batch, split over processes
      eval_batch_size=32,  # global evaluation batch
      image_size=(256, 256),  # model input (height, width)
      output_stride=4,  # input pixels per heatmap / mask pixel
      box_padding=1.25,  # top-down crop = person box x this
      min_keypoints=1,  # top-down training people need this many joints
      max_people=8,  # full-image: people per image, padded
      num_workers=0,  # worker processes (0: threads in this process)
      num_threads=4,  # reader threads per process
      prefetch=8,  # examples prefetched per thread pool
      augment=augment.default_config(),
  ))


def damaged_count() -> int:
  """Damaged samples skipped in this process so far."""
  return _damaged['count']


def geometry(cfg: ml_collections.ConfigDict) -> warp_lib.Geometry:
  return warp_lib.Geometry(tuple(cfg.image_size), cfg.output_stride)


def sample_builder(dataset: example_lib.ImageDataset,
                   cfg: ml_collections.ConfigDict, train: bool):
  """The callable turning a record (and a generator) into a sample."""
  aug = cfg.augment if train else None
  if cfg.mode == 'top_down':
    return top_down.TopDownSample(dataset, geometry(cfg), cfg.box_padding,
                                  aug)
  if cfg.mode == 'full_image':
    return full_image.FullImageSample(dataset, geometry(cfg), cfg.max_people,
                                      aug)
  raise ValueError(f'input.mode must be one of {MODES}, got {cfg.mode!r}')


def records(dataset: example_lib.ImageDataset, cfg: ml_collections.ConfigDict,
            train: bool, detections=None) -> list[Any]:
  """Training or evaluation records of a dataset.

  Top-down training uses people with at least ``min_keypoints`` labelled
  joints; top-down evaluation uses every non-crowd person with a labelled
  joint, or the detected boxes when `detections` ({image_id: (boxes,
  scores)}) are given. Full-image mode uses image indices.
  """
  if cfg.mode == 'full_image':
    return list(range(len(dataset)))
  if detections is not None:
    return top_down.detection_records(dataset, detections)
  return top_down.person_records(dataset,
                                 cfg.min_keypoints if train else 1)


class _Padding:
  """The record of an evaluation slot past the end of the data."""


class _Guarded:
  """Builds a sample; a damaged one is logged, counted and replaced.

  In training the replacement is None (filtered out); in evaluation it is a
  ``valid=False`` placeholder so batch counts stay exact.
  """

  def __init__(self, build, train: bool):
    self.build = build
    self.train = train

  def __call__(self, record, rng: np.random.Generator | None = None):
    if isinstance(record, _Padding):
      return self.build.placeholder()
    try:
      return self.build(record, rng)
    except example_lib.DamagedSampleError as e:
      _damaged['count'] += 1
      logging.warning('Skipping damaged sample (%d in this process): %s',
                      _damaged['count'], e)
      return None if self.train else self.build.placeholder()


def _is_sample(x) -> bool:
  return x is not None


def _to_iter(ds: grain.MapDataset, cfg: ml_collections.ConfigDict,
             batch_size: int, drop_remainder: bool) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch))
  if cfg.num_workers > 0:
    # Workers make single examples, which are interleaved back into the
    # original order; batching after that keeps every batch the same for
    # any number of workers.
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers))
  return it.batch(batch_size, drop_remainder=drop_remainder)


class _ProcessShare(grain.MapDataset):
  """One process's part of every global batch of an example stream.

  Global batch b is examples [b*G, (b+1)*G) of the parent, G = `batch_size`
  * `count`; process `index` reads only its `batch_size` of them, [b*G +
  index*batch_size, ...). Each example is made (and augmented) for its
  position in the parent, so the global batches are the same for any number
  of processes.
  """

  def __init__(self, parent: grain.MapDataset, batch_size: int, index: int,
               count: int):
    super().__init__(parent)
    self._batch, self._index, self._count = batch_size, index, count

  def __len__(self) -> int:
    return len(self._parent) // self._count

  def __getitem__(self, index):
    if isinstance(index, slice):
      raise TypeError('_ProcessShare does not slice')
    batch, offset = divmod(index, self._batch)
    return self._parent[(batch * self._count + self._index) * self._batch
                        + offset]

  def __str__(self) -> str:
    return (f'_ProcessShare(batch_size={self._batch}, index={self._index}, '
            f'count={self._count})')


def train_dataset(dataset: example_lib.ImageDataset,
                  cfg: ml_collections.ConfigDict, *, seed: int,
                  batch_size: int, shard_index: int = 0,
                  shard_count: int = 1) -> grain.IterDataset:
  """Infinite, shuffled, augmented batches of `batch_size` for one process.

  With `shard_count` processes, each loads `batch_size` examples of every
  global batch of `batch_size * shard_count` (`_ProcessShare`).
  """
  recs = records(dataset, cfg, train=True)
  ds = grain.MapDataset.source(recs).shuffle(seed=seed).repeat()
  ds = ds.random_map(_Guarded(sample_builder(dataset, cfg, True), True),
                     seed=seed)
  if shard_count > 1:
    ds = _ProcessShare(ds, batch_size, shard_index, shard_count)
  ds = ds.filter(_is_sample)
  return _to_iter(ds, cfg, batch_size, drop_remainder=True)


def eval_dataset(dataset: example_lib.ImageDataset,
                 cfg: ml_collections.ConfigDict, *, batch_size: int,
                 detections=None, shard_index: int = 0,
                 shard_count: int = 1) -> tuple[grain.IterDataset, int]:
  """One pass over every record, padded to whole batches on every process.

  Returns:
    The batches of this process, and the number of real records in all.
  """
  recs = records(dataset, cfg, train=False, detections=detections)
  per_shard = max(1, math.ceil(len(recs) / (batch_size * shard_count))
                  ) * batch_size
  # Grain drops None elements, so padding needs a record of its own.
  padded = recs + [_Padding()] * (per_shard * shard_count - len(recs))
  mine = padded[shard_index * per_shard:(shard_index + 1) * per_shard]
  ds = grain.MapDataset.source(mine).map(
      _Guarded(sample_builder(dataset, cfg, False), False))
  return _to_iter(ds, cfg, batch_size, drop_remainder=False), len(recs)
