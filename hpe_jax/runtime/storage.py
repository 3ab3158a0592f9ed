"""Workdir paths: a local folder or a bucket (``gs://bucket/run``).

The hosts of a TPU pod share no disk, so their run writes to a bucket:
Orbax writes checkpoints there itself, and the rest of the workdir
(``config.json``, ``metrics.jsonl``, TensorBoard events) goes through
`etils.epath`, which reaches ``gs://`` with ``gcsfs`` and ``s3://`` with
``s3fs`` installed. Local paths stay plain paths.
"""

from __future__ import annotations

import os

from etils import epath

_REMOTE_SCHEMES = ('gs://', 's3://')


def is_remote(path: str | os.PathLike[str]) -> bool:
  return str(path).startswith(_REMOTE_SCHEMES)


def absolute(path: str | os.PathLike[str]) -> str:
  """`path` made absolute, unless it is a bucket path (already absolute)."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def join(path: str | os.PathLike[str], *names: str) -> epath.Path:
  """`path`/`names` as an `epath.Path` (local or bucket)."""
  return epath.Path(absolute(path)).joinpath(*names)
