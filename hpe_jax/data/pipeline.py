"""Grain input pipelines: fixed-shape training and evaluation batches.

Training: records (people for top-down, images for full-image mode) are
shuffled with a fixed seed anew each epoch, repeated forever, augmented with
a per-example generator derived from (seed, position) and batched with a
fixed size. Each host process loads only its share of every global batch,
and neither the number of host processes nor of Grain worker processes
changes the global batches. The iterator's position is a small dict
(``iterator.get_state()``) that the training loop checkpoints. Training data
with none of a label the task trains on (keypoints, person masks, part
maps) stops the run at start-up with one line (`check_labels`).

Evaluation: every record once, in order, padded with ``valid=False``
placeholders to whole batches on every process, so each example is counted
exactly once.

A damaged sample (unreadable image or label file) is skipped in training and
becomes an invalid placeholder in evaluation; either way it is logged with
its file name and counted. The count travels with the data, so it is exact
for any number of worker processes and hosts: every example carries
``damaged``, the damaged samples it stands for (evaluation: 1 for the
placeholder of a damaged sample; training: those skipped just before it in
the same process). ``input.max_consecutive_damaged`` damaged samples in a
row stop the pipeline with an `errors.DataError` naming the first few, so a
dataset that is all damaged fails at once instead of looping forever.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from absl import logging
import grain
import ml_collections
import numpy as np

from hpe_jax import errors
from hpe_jax.data import augment
from hpe_jax.data import example as example_lib
from hpe_jax.data import full_image
from hpe_jax.data import top_down
from hpe_jax.data import warp as warp_lib

MODES = ('top_down', 'full_image')


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
      # Examples made ahead of the step: two batches of 32 keep the input
      # working while the step runs (8 left the smoke run input-bound).
      prefetch=64,
      max_consecutive_damaged=100,  # damaged samples in a row that stop it
      augment=augment.default_config(),
  ))


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


# The labels a task can train on (`base.Task.training_labels`): what the
# error says when a dataset has none, and which recipes need it.
_LABELS = {
    'keypoints': ('0 people with keypoints',
                  'keypoint recipes need keypoints'),
    'person_masks': ('0 people with masks',
                     'mask recipes need person masks'),
    'part_map': ('no part maps', 'part recipes need part-label images'),
}


def _has_label(dataset: example_lib.ImageDataset, label: str) -> bool:
  """Whether some non-crowd person of `dataset` has `label` (a `_LABELS`
  key); 'part_map' asks whether the dataset has part maps at all.

  Stops at the first person found, so usual data costs one annotation.
  Images whose annotation cannot be read are passed over (loading them
  reports them).
  """
  if label == 'part_map':
    return dataset.part_schema is not None
  if label == 'keypoints' and dataset.skeleton is None:
    return False
  if label == 'person_masks' and not dataset.has_masks:
    return False
  for i in range(len(dataset)):
    try:
      ann = dataset.annotation(i)
    except example_lib.DamagedSampleError:
      continue
    people = ~ann['is_crowd']
    if label == 'keypoints':
      people &= (ann['keypoints'][..., 2] > 0).any(-1)
    if people.any():
      return True
  return False


def check_labels(dataset: example_lib.ImageDataset,
                 labels: tuple[str, ...]) -> None:
  """Stops a run whose training data has none of a label its task needs.

  Without it a segmentation run on a file without masks trains on
  all-background targets and a keypoint run on one without keypoints on
  nothing, both ending "successfully".

  Args:
    dataset: the training split.
    labels: `_LABELS` keys the task trains on.

  Raises:
    errors.DataError: one line naming the dataset (a COCO reader's name is
      its file) and the missing label.
  """
  for label in labels:
    if label not in _LABELS:
      raise ValueError(f'unknown training label {label!r}; known: '
                       f'{sorted(_LABELS)}')
    if not _has_label(dataset, label):
      missing, need = _LABELS[label]
      hint = (' (mask recipes can use its person masks)'
              if label == 'keypoints' and _has_label(dataset, 'person_masks')
              else '')
      raise errors.DataError(f'{dataset.name}: {missing}; {need}{hint}')


class _Padding:
  """The record of an evaluation slot past the end of the data."""


class _Guarded:
  """Builds a sample; a damaged one is logged, counted and replaced.

  In training the replacement is None (filtered out) and the next sample
  carries the count; in evaluation it is a ``valid=False`` placeholder with
  ``damaged=1``, so batch counts stay exact.
  """

  _SHOWN = 3  # damaged files named when the cap stops the pipeline

  def __init__(self, build, train: bool, max_consecutive: int):
    self.build = build
    self.train = train
    self.max_consecutive = max_consecutive
    self._lock = threading.Lock()
    self._skipped = 0  # damaged since the last good sample (training)
    self._run: list[str] = []  # the current run of damaged samples

  def __getstate__(self):
    # Worker processes get a copy with fresh counts and their own lock.
    return dict(build=self.build, train=self.train,
                max_consecutive=self.max_consecutive)

  def __setstate__(self, state):
    self.__init__(**state)

  def __call__(self, record, rng: np.random.Generator | None = None):
    if isinstance(record, _Padding):
      return _mark(self.build.placeholder(), 0)
    try:
      sample = self.build(record, rng)
    except example_lib.DamagedSampleError as e:
      return self._damaged(e)
    with self._lock:
      skipped, self._skipped = self._skipped, 0
      self._run.clear()
    return _mark(sample, skipped if self.train else 0)

  def _damaged(self, error: example_lib.DamagedSampleError):
    with self._lock:
      self._skipped += 1
      self._run.append(str(error))
      run = list(self._run)
    logging.warning('Skipping damaged sample: %s', error)
    if len(run) >= self.max_consecutive > 0:
      raise errors.DataError(
          f'{len(run)} damaged samples in a row, so the input stops; the '
          f'first: {"; ".join(run[:self._SHOWN])}. Fix the dataset (or raise '
          'input.max_consecutive_damaged).')
    return None if self.train else _mark(self.build.placeholder(), 1)


def _mark(sample: dict, damaged: int) -> dict:
  sample['damaged'] = np.int32(damaged)
  return sample


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
                  shard_count: int = 1,
                  labels: tuple[str, ...] = ()) -> grain.IterDataset:
  """Infinite, shuffled, augmented batches of `batch_size` for one process.

  With `shard_count` processes, each loads `batch_size` examples of every
  global batch of `batch_size * shard_count` (`_ProcessShare`). `labels`
  are those the task trains on (`check_labels`).
  """
  check_labels(dataset, labels)
  recs = records(dataset, cfg, train=True)
  if not recs:
    raise errors.DataError(
        f'{dataset.name}: no training examples (input.mode={cfg.mode}'
        + (f', people with at least input.min_keypoints={cfg.min_keypoints}'
           ' labelled joints' if cfg.mode == 'top_down' else '') + ')')
  ds = grain.MapDataset.source(recs).shuffle(seed=seed).repeat()
  ds = ds.random_map(_Guarded(sample_builder(dataset, cfg, True), True,
                              cfg.max_consecutive_damaged), seed=seed)
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
      _Guarded(sample_builder(dataset, cfg, False), False,
               cfg.max_consecutive_damaged))
  return _to_iter(ds, cfg, batch_size, drop_remainder=False), len(recs)
