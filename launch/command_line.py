"""What the launchers share: their own flags before ``--``, the command or
training arguments after it."""

from __future__ import annotations

from typing import Sequence


def split_at_dashes(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(the launcher's arguments, what follows ``--``; empty if no ``--``)."""
  argv = list(argv)
  if '--' not in argv:
    return argv, []
  split = argv.index('--')
  return argv[:split], argv[split + 1:]


def train_workdir(train_args: Sequence[str]) -> str:
  """The workdir of ``hpe_jax.main`` arguments that name a recipe and one.

  Raises:
    ValueError: ``--config=`` or ``--workdir=`` is missing.
  """
  if not any(a.startswith('--config=') for a in train_args):
    raise ValueError('the training arguments after -- need --config=RECIPE')
  workdirs = [a[len('--workdir='):] for a in train_args
              if a.startswith('--workdir=')]
  if not workdirs:
    raise ValueError('the training arguments after -- need --workdir=DIR')
  return workdirs[-1]
