r"""Runs a recipe's sweep of trials and writes its results tables.

  python -m launch.sweep --config=configs/hourglass.py:smoke \
      --workdir_root=/tmp/hg_stacks [--parallel=2] [--print_commands] \
      [--config.total_steps=200 ...]

The recipe's ``get_hyper(h)`` (see `launch.hyper`) lists the trials. Each
trial is one ``python -m hpe_jax.main`` run in its own workdir,
``ROOT/<overrides>`` (e.g. ``ROOT/model.num_stacks=4``), with the trial's
overrides and any ``--config.key=value`` given here (applied to every
trial). A trial that finished (``ROOT/<name>/sweep_trial.json`` says so) is
skipped; an unfinished one is run again with the same command, which
resumes it from its latest checkpoint. ``--print_commands`` prints the
commands instead (one per line, to send to a pod or cluster) and runs
nothing.

When the trials are done, ``ROOT/results.csv`` and ``ROOT/results.md``
hold one row per trial: its overrides, status, last step, wall time (summed
over the runs of the trial), parameter count, and every evaluation metric
at the last evaluation with its best value over the run (higher is better
for every metric the evaluators report; per-joint and per-class metrics
only in the CSV). ``--results_only`` rewrites them
from the workdirs without running anything.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Sequence

import jax

from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.models import registry
from hpe_jax.runtime import metric_writer
from hpe_jax.runtime import run_config
from launch import hyper

TRIAL_FILE = 'sweep_trial.json'
LOG_FILE = 'sweep.log'
EVAL_PREFIX = 'eval/'
# Eval counts, not scores: a plain column of the last value, with no "best".
EVAL_COUNTS = ('eval/damaged_examples',)


@dataclasses.dataclass(frozen=True)
class Trial:
  """One run of a sweep."""
  name: str
  recipe: str  # file[:args] given to --config
  overrides: dict[str, Any]  # config paths -> Python values
  workdir: str

  def command(self, extra: Sequence[str] = (),
              python: str = 'python') -> list[str]:
    """The ``hpe_jax.main`` command line of the trial."""
    flags = [f'--config.{k}={flag_value(v)}'
             for k, v in self.overrides.items()]
    return [python, '-m', 'hpe_jax.main', f'--config={self.recipe}',
            f'--workdir={self.workdir}', *flags, *extra]


def flag_value(value: Any) -> str:
  """A Python value as ml_collections reads it from the command line."""
  if isinstance(value, bool):
    return str(value).lower()
  if isinstance(value, (tuple, list)):
    inner = ','.join(flag_value(v) for v in value)
    return f'({inner},)' if len(value) == 1 else f'({inner})'
  return str(value)


def _recipe_file(spec: str) -> tuple[str, str | None]:
  path, _, arg = spec.partition(':')
  return path, arg or None


def load_module(path: str):
  """The recipe file `path` as a module."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such recipe file')
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def trial_name(overrides: dict[str, Any]) -> str:
  """A workdir name that says what the trial changes."""
  parts = []
  for key, value in overrides.items():
    if key == 'config':
      path, arg = _recipe_file(value)
      value = os.path.splitext(os.path.basename(path))[0] + (
          f'-{arg}' if arg else '')
    parts.append(f'{key}={flag_value(value)}')
  return re.sub(r'[^\w.=,+-]', '_', ','.join(parts)) or 'base'


def make_trials(config: str, workdir_root: str) -> list[Trial]:
  """The trials of the recipe `config` (``file[:args]``).

  A trial's ``config`` key replaces the recipe (``file[:args]``), its
  ``arg`` key the recipe's arguments; every other key is a config
  override.
  """
  path, arg = _recipe_file(config)
  module = load_module(path)
  if not hasattr(module, 'get_hyper'):
    raise ValueError(f'{path} defines no sweep (get_hyper)')
  trials = module.get_hyper(hyper)
  if not trials:
    raise ValueError(f'{path}: get_hyper returned no trials')
  out, names = [], set()
  for overrides in trials:
    overrides = dict(overrides)
    name = trial_name(overrides)
    if name in names:
      raise ValueError(f'{path}: two trials named {name!r}')
    names.add(name)
    recipe = overrides.pop('config', config)
    if 'arg' in overrides:
      recipe = f'{path}:{overrides.pop("arg")}'
    out.append(Trial(name, recipe, overrides,
                     os.path.join(workdir_root, name)))
  return out


def _read_json(path: str) -> dict[str, Any] | None:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def trial_state(trial: Trial) -> dict[str, Any]:
  """What the runner recorded of a trial (empty if never run)."""
  return _read_json(os.path.join(trial.workdir, TRIAL_FILE)) or {}


def run_trial(trial: Trial, extra: Sequence[str]) -> str:
  """Runs (or resumes) a trial unless it finished; returns its status."""
  state = trial_state(trial)
  if state.get('finished'):
    return 'skipped (finished)'
  os.makedirs(trial.workdir, exist_ok=True)
  command = trial.command(extra, python=sys.executable)
  start = time.perf_counter()
  with open(os.path.join(trial.workdir, LOG_FILE), 'a') as log:
    code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                          check=False).returncode
  state = dict(name=trial.name, recipe=trial.recipe,
               overrides=trial.overrides, extra=list(extra),
               command=shlex.join(trial.command(extra)), returncode=code,
               finished=code == 0,
               wall_s=state.get('wall_s', 0.0) + time.perf_counter() - start)
  with open(os.path.join(trial.workdir, TRIAL_FILE), 'w') as f:
    json.dump(state, f, indent=2)
  return 'finished' if code == 0 else (
      f'failed (exit {code}, see {os.path.join(trial.workdir, LOG_FILE)})')


def parameter_count(workdir: str) -> int | None:
  """Parameters of a run's model, from its saved config (no weights read)."""
  if not os.path.isfile(os.path.join(workdir, run_config.CONFIG_FILE)):
    return None
  config = run_config.load_config(workdir)
  model = registry.build_for_run(config, datasets.skeleton(config.dataset))
  inputs = tasks.make(config).init_inputs(
      tuple(config.input.image_size), model.num_joints, model.dtype)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), **inputs,
                                             train=False))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes['params']))


def trial_row(trial: Trial) -> dict[str, Any]:
  """The results-table row of a trial."""
  state = trial_state(trial)
  row = dict(trial=trial.name, recipe=trial.recipe, **{
      k: flag_value(v) for k, v in trial.overrides.items()})
  row['status'] = ('finished' if state.get('finished') else
                   'failed' if state else 'not run')
  row['wall_s'] = round(state['wall_s'], 1) if state else None
  lines = []
  if os.path.isfile(os.path.join(trial.workdir, 'metrics.jsonl')):
    lines = metric_writer.read_metrics(trial.workdir)
  row['steps'] = max((l['step'] for l in lines), default=None)
  row['params'] = parameter_count(trial.workdir)
  evals = [l for l in lines if any(k.startswith(EVAL_PREFIX) for k in l)]
  if evals:
    for key in sorted({k for l in evals for k in l if
                       k.startswith(EVAL_PREFIX)}):
      if key in EVAL_COUNTS:
        row[key[len(EVAL_PREFIX):]] = evals[-1].get(key)
        continue
      values = [l[key] for l in evals if key in l and
                not math.isnan(l[key])]
      row[key] = evals[-1].get(key)
      row[f'best {key}'] = max(values) if values else None
  return row


def write_results(workdir_root: str, rows: list[dict[str, Any]]) -> None:
  """``results.csv`` (every column) and ``results.md`` (final (best))."""
  columns = []
  for row in rows:
    columns += [k for k in row if k not in columns]
  with open(os.path.join(workdir_root, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  plain = [c for c in columns if not c.startswith(('best ', EVAL_PREFIX))]
  # Per-joint and per-class figures ('pck@0.2_torso/nose') stay in the CSV:
  # the table keeps one column per protocol.
  metrics = [c for c in columns
             if c.startswith(EVAL_PREFIX) and '/' not in c[len(EVAL_PREFIX):]]
  header = plain + [m[len(EVAL_PREFIX):] + ' (best)' for m in metrics]
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '---|' * len(header)]
  for row in rows:
    cells = [_cell(row.get(c)) for c in plain]
    cells += [f'{_cell(row.get(m))} ({_cell(row.get("best " + m))})'
              if row.get(m) is not None else '' for m in metrics]
    lines.append('| ' + ' | '.join(cells) + ' |')
  with open(os.path.join(workdir_root, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def _cell(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  # --config.key=value goes to every trial; the rest are the runner's own.
  extra = [a for a in argv if a.startswith('--config.')]
  parser = argparse.ArgumentParser(prog='python -m launch.sweep',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', required=True,
                      help='recipe file[:args] defining get_hyper')
  parser.add_argument('--workdir_root', required=True)
  parser.add_argument('--parallel', type=int, default=1,
                      help='trials run at once on this machine')
  parser.add_argument('--print_commands', action='store_true',
                      help='print the trial commands, run nothing')
  parser.add_argument('--results_only', action='store_true',
                      help='only rewrite the results tables')
  args = parser.parse_args([a for a in argv if a not in extra])
  trials = make_trials(args.config, args.workdir_root)
  if args.print_commands:
    for trial in trials:
      print(shlex.join(trial.command(extra)))
    return 0
  os.makedirs(args.workdir_root, exist_ok=True)
  failed = 0
  if not args.results_only:
    with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
      for trial, status in zip(trials, pool.map(
          lambda t: run_trial(t, extra), trials)):
        print(f'{trial.name}: {status}', flush=True)
        failed += status.startswith('failed')
  write_results(args.workdir_root, [trial_row(t) for t in trials])
  print(f'{len(trials)} trials -> '
        f'{os.path.join(args.workdir_root, "results.md")}')
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
