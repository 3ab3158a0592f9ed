"""Building blocks of a recipe's sweep: what `get_hyper(h)` is handed as `h`.

A recipe in ``configs/`` may define ``get_hyper(h)`` returning its trials: a
list of dicts of overrides, ``{'model.num_stacks': 2, ...}`` (config paths
without the ``config.`` prefix, Python values). The special key ``config``
replaces the recipe itself for that trial (``'configs/unet.py:smoke'``), so
one sweep can compare recipes.

  def get_hyper(h):
    return h.product([h.sweep('model.num_stacks', [1, 2, 4, 8]),
                      h.sweep('seed', [0, 1])])
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

Trial = dict[str, Any]


def sweep(key: str, values: Sequence[Any]) -> list[Trial]:
  """One trial per value of `key`."""
  return [{key: v} for v in values]


def fixed(key: str, value: Any) -> list[Trial]:
  """`key` set to `value` in the one trial (for products)."""
  return [{key: value}]


def product(parts: Sequence[list[Trial]]) -> list[Trial]:
  """Every combination of one trial from each part (the first varies
  slowest)."""
  return [_merged(combo) for combo in itertools.product(*parts)]


def zipit(parts: Sequence[list[Trial]]) -> list[Trial]:
  """The i-th trials of all parts together; the parts must be as long."""
  lengths = {len(p) for p in parts}
  if len(lengths) > 1:
    raise ValueError(f'zipit needs parts of one length, got {sorted(lengths)}')
  return [_merged(combo) for combo in zip(*parts)]


def _merged(trials: Sequence[Trial]) -> Trial:
  out: Trial = {}
  for t in trials:
    clash = set(out) & set(t)
    if clash:
      raise ValueError(f'{sorted(clash)} set twice in one trial')
    out.update(t)
  return out
