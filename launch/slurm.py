r"""Writes (and submits) a SLURM batch script for a multi-node GPU run.

  python -m launch.slurm --nodes=2 --gpus_per_node=8 [--process_per=gpu] \
      [--partition=P] [--account=A] [--time=24:00:00] [--cpus_per_gpu=8] \
      [--job_name=hpe_jax] [--venv=PATH] [--output=run.sbatch] [--submit] \
      -- --config=configs/hourglass.py --workdir=/shared/runs/hg \
      [--config.key=value ...]

The script's one ``srun`` step starts ``python -m hpe_jax.main`` with the
arguments after ``--`` as every task of the job; JAX reads its place in the
run from SLURM's environment (`hpe_jax.runtime.multihost`).

- ``--process_per=gpu`` (default): one task per GPU. JAX gives each task the
  GPU of its node-local index.
- ``--process_per=node``: one task per node, driving all the node's GPUs
  (the script sets ``JAX_LOCAL_DEVICE_IDS`` so that JAX does not pin it to a
  single GPU).

Without ``--output`` the script is printed; with it, written to that path,
and ``--submit`` then hands it to ``sbatch``. The workdir must be on a file
system every node sees. SLURM sends SIGTERM two minutes before the time
limit, on which the run saves a checkpoint and stops; submitting the same
script again resumes it from there.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from typing import Sequence

from launch import command_line

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROCESS_PER = ('gpu', 'node')


def batch_script(train_args: Sequence[str], *, nodes: int,
                 gpus_per_node: int, repo_root: str,
                 process_per: str = 'gpu', partition: str | None = None,
                 account: str | None = None, time: str = '24:00:00',
                 cpus_per_gpu: int = 8, job_name: str = 'hpe_jax',
                 venv: str | None = None) -> str:
  """The text of the batch script.

  Args:
    train_args: the arguments of ``hpe_jax.main``.
    nodes: how many nodes.
    gpus_per_node: GPUs used on each node.
    repo_root: absolute path of the checkout on the cluster's shared disk.
    process_per: ``gpu`` (a task per GPU) or ``node`` (a task per node).
    partition: SLURM partition (None: the cluster's default).
    account: SLURM account to charge (None: the user's default).
    time: the job's time limit, as sbatch reads it.
    cpus_per_gpu: CPU cores per GPU (input pipeline workers).
    job_name: the job's name, also the log file's prefix.
    venv: a virtual environment to activate first (None: the PATH's python).

  Raises:
    ValueError: a bad count, mode or training argument list.
  """
  command_line.train_workdir(train_args)
  for name, value in (('--nodes', nodes), ('--gpus_per_node', gpus_per_node),
                      ('--cpus_per_gpu', cpus_per_gpu)):
    if value < 1:
      raise ValueError(f'{name}={value}: need at least 1')
  for name, value in (('--job_name', job_name), ('--time', time),
                      ('--partition', partition), ('--account', account)):
    # #SBATCH lines are not shell: a value cannot be quoted there.
    if value is not None and (not value or any(c.isspace() for c in value)):
      raise ValueError(f'{name}={value!r}: must be non-empty and without '
                       'spaces')
  if process_per not in PROCESS_PER:
    raise ValueError(f'--process_per={process_per}: expected one of '
                     f'{", ".join(PROCESS_PER)}')
  per_gpu = process_per == 'gpu'
  tasks_per_node = gpus_per_node if per_gpu else 1
  cpus_per_task = cpus_per_gpu if per_gpu else cpus_per_gpu * gpus_per_node
  sbatch = [f'--job-name={job_name}',
            f'--nodes={nodes}',
            f'--ntasks-per-node={tasks_per_node}',
            f'--gpus-per-node={gpus_per_node}',
            f'--cpus-per-task={cpus_per_task}',
            f'--time={time}']
  if partition:
    sbatch.append(f'--partition={partition}')
  if account:
    sbatch.append(f'--account={account}')
  sbatch += [f'--output={job_name}-%j.out',
             # Time for the checkpoint the run saves on SIGTERM.
             '--signal=TERM@120']
  lines = ['#!/bin/bash']
  lines += [f'#SBATCH {option}' for option in sbatch]
  lines += [
      '',
      '# Written by launch/slurm.py. The workdir must be on a file system',
      '# that every node sees. SIGTERM 120 s before the time limit makes the',
      '# run save a checkpoint; submitting this script again resumes it.',
      '',
      'set -euo pipefail',
  ]
  if venv:
    lines.append(f'source {shlex.quote(os.path.join(venv, "bin/activate"))}')
  lines += [
      f'cd {shlex.quote(repo_root)}',
      # Newer SLURM releases do not pass sbatch's --cpus-per-task on to srun.
      'export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK}"',
  ]
  if not per_gpu:
    # Otherwise JAX would pin each process to the GPU of its local task
    # index, i.e. GPU 0 only.
    lines.append('export JAX_LOCAL_DEVICE_IDS='
                 + ','.join(str(g) for g in range(gpus_per_node)))
  lines.append('srun python -m hpe_jax.main ' + shlex.join(train_args))
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> int:
  argv, train_args = command_line.split_at_dashes(
      sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(
      prog='python -m launch.slurm',
      description='Writes a SLURM batch script that runs hpe_jax.main.')
  parser.add_argument('--nodes', type=int, required=True)
  parser.add_argument('--gpus_per_node', type=int, required=True)
  parser.add_argument('--process_per', choices=PROCESS_PER, default='gpu',
                      help='a process per GPU or per node')
  parser.add_argument('--partition', default=None)
  parser.add_argument('--account', default=None)
  parser.add_argument('--time', default='24:00:00',
                      help='time limit of the job')
  parser.add_argument('--cpus_per_gpu', type=int, default=8)
  parser.add_argument('--job_name', default='hpe_jax')
  parser.add_argument('--venv', default=None,
                      help='virtual environment to activate on the nodes')
  parser.add_argument('--output', default=None,
                      help='where to write the script (default: print it)')
  parser.add_argument('--submit', action='store_true',
                      help='submit the written script with sbatch')
  args = parser.parse_args(argv)
  if args.submit and not args.output:
    parser.error('--submit needs --output (the script sbatch reads)')
  try:
    script = batch_script(
        train_args, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
        repo_root=REPO_ROOT, process_per=args.process_per,
        partition=args.partition, account=args.account, time=args.time,
        cpus_per_gpu=args.cpus_per_gpu, job_name=args.job_name,
        venv=os.path.abspath(args.venv) if args.venv else None)
  except ValueError as e:
    parser.error(str(e))
  if not args.output:
    sys.stdout.write(script)
    return 0
  with open(args.output, 'w') as f:
    f.write(script)
  print(f'Wrote {args.output}', file=sys.stderr)
  if not args.submit:
    return 0
  try:
    done = subprocess.run(['sbatch', args.output], capture_output=True,
                          text=True)
  except FileNotFoundError:
    print('[launch.slurm] sbatch not found: run this on the cluster',
          file=sys.stderr)
    return 127
  sys.stdout.write(done.stdout)
  sys.stderr.write(done.stderr)
  return done.returncode


if __name__ == '__main__':
  sys.exit(main())
