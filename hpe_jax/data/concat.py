"""Concatenation of image datasets that share a label layout.

Used to train on several sources as one, e.g. LSP train + LSPET. The parts
must agree on skeleton, part schema and whether they have person masks, so
every example of the whole has the same keys and shapes. Image ids are passed
through unchanged; readers choose id ranges that do not collide (LSPET's
start at 100001).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np

from hpe_jax.data import example


class ConcatDataset(example.ImageDataset):
  """The examples of `datasets`, one after the other."""

  def __init__(self, datasets: Sequence[example.ImageDataset]):
    if not datasets:
      raise ValueError('ConcatDataset needs at least one dataset')
    first = datasets[0]
    for d in datasets[1:]:
      for attr in ('skeleton', 'part_schema', 'has_masks'):
        if getattr(d, attr) != getattr(first, attr):
          raise ValueError(
              f'cannot concatenate {first.name} and {d.name}: {attr} differs '
              f'({getattr(first, attr)!r} vs {getattr(d, attr)!r})')
    self.datasets = tuple(datasets)
    self.name = '+'.join(d.name for d in datasets)
    self.skeleton = first.skeleton
    self.part_schema = first.part_schema
    self.has_masks = first.has_masks
    self.num_skipped = sum(d.num_skipped for d in datasets)
    self._ends = np.cumsum([len(d) for d in datasets]).tolist()

  def __len__(self) -> int:
    return self._ends[-1]

  def _locate(self, index: int) -> tuple[example.ImageDataset, int]:
    if not 0 <= index < len(self):
      raise IndexError(f'{self.name}: index {index} out of range')
    part = bisect.bisect_right(self._ends, index)
    start = self._ends[part - 1] if part else 0
    return self.datasets[part], index - start

  def annotation(self, index: int) -> example.Example:
    dataset, local = self._locate(index)
    return dataset.annotation(local)

  def load_pixels(self, index: int,
                  annotation: example.Example) -> example.Example:
    dataset, local = self._locate(index)
    return dataset.load_pixels(local, annotation)
