r"""Starts one multi-process run on this machine: N processes, one command.

  python -m launch.local --num_processes=2 [--cpu_devices_per_process=2] \
      [--gpus_per_process=1] [--port=0] -- \
      python -m hpe_jax.main --config=configs/hourglass.py:smoke --workdir=DIR

Each process runs the command after ``--`` with ``--coordinator_address=
127.0.0.1:PORT --num_processes=N --process_id=I`` appended, so the processes
form one JAX run exactly as the hosts of a pod do (CPU collectives go through
gloo on loopback). ``--cpu_devices_per_process`` gives every process that many
virtual CPU devices (to try multi-host code on a laptop);
``--gpus_per_process`` gives process I the GPUs I*K ... I*K+K-1 through
``CUDA_VISIBLE_DEVICES``. Output lines are prefixed with ``[I]``.

SIGTERM or Ctrl-C reaches every process as SIGTERM, which the training loop
treats as preemption: all save one agreed checkpoint and exit. If a process
fails, the others are stopped (their collectives could never complete) and
the launcher exits with its status.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Sequence

from launch import command_line


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def process_commands(command: Sequence[str], num_processes: int, port: int,
                     cpu_devices_per_process: int = 0,
                     gpus_per_process: int = 0,
                     base_env: dict[str, str] | None = None
                     ) -> list[tuple[list[str], dict[str, str]]]:
  """(command line, environment) of each process."""
  if not command:
    raise ValueError('no command given (put it after --)')
  if num_processes < 1:
    raise ValueError(f'--num_processes={num_processes}: need at least 1')
  if cpu_devices_per_process and gpus_per_process:
    raise ValueError('--cpu_devices_per_process and --gpus_per_process '
                     'exclude each other')
  base_env = dict(os.environ if base_env is None else base_env)
  out = []
  for i in range(num_processes):
    env = dict(base_env)
    if cpu_devices_per_process:
      env['JAX_PLATFORMS'] = 'cpu'
      env['JAX_NUM_CPU_DEVICES'] = str(cpu_devices_per_process)
    if gpus_per_process:
      first = i * gpus_per_process
      env['CUDA_VISIBLE_DEVICES'] = ','.join(
          str(g) for g in range(first, first + gpus_per_process))
    out.append(([*command, f'--coordinator_address=127.0.0.1:{port}',
                 f'--num_processes={num_processes}', f'--process_id={i}'],
                env))
  return out


def _relay(index: int, stream) -> None:
  for line in stream:
    sys.stdout.write(f'[{index}] {line}')
    sys.stdout.flush()


def run(commands: Sequence[tuple[list[str], dict[str, str]]]) -> int:
  """Runs the processes to the end; the first failure's status, else 0."""
  procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
           for cmd, env in commands]
  relays = [threading.Thread(target=_relay, args=(i, p.stdout), daemon=True)
            for i, p in enumerate(procs)]
  for t in relays:
    t.start()

  def forward(signum, frame):
    del signum, frame
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, forward)
              for s in (signal.SIGTERM, signal.SIGINT)}
  status = 0
  try:
    pending = set(range(len(procs)))
    while pending:
      for i in sorted(pending):
        try:
          code = procs[i].wait(timeout=0.2)
        except subprocess.TimeoutExpired:
          continue
        pending.discard(i)
        if code and not status:
          status = code
          print(f'[launch.local] process {i} exited with status {code}; '
                'stopping the others', flush=True)
          for j in pending:
            procs[j].kill()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    for t in relays:
      t.join(timeout=5)
  return status


def main(argv: Sequence[str] | None = None) -> int:
  argv, command = command_line.split_at_dashes(
      sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(
      prog='python -m launch.local',
      description='Runs a command as N cooperating JAX processes here.')
  parser.add_argument('--num_processes', type=int, required=True)
  parser.add_argument('--cpu_devices_per_process', type=int, default=0)
  parser.add_argument('--gpus_per_process', type=int, default=0)
  parser.add_argument('--port', type=int, default=0,
                      help='coordinator port (0: a free one)')
  args = parser.parse_args(argv)
  try:
    commands = process_commands(
        command, args.num_processes, args.port or free_port(),
        args.cpu_devices_per_process, args.gpus_per_process)
  except ValueError as e:
    parser.error(str(e))
  return run(commands)


if __name__ == '__main__':
  sys.exit(main())
