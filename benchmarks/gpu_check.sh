#!/usr/bin/env bash
# The GPU check of issue 15 in one command: environment, speed of the paper
# hourglass and of a 2-stack one (hpe_jax.benchmark and the PyTorch twin),
# then a short bf16 training run on synthetic people and its evaluation.
# docs/gpu.md says how to run it, what it measures and what it writes.
#
#   bash benchmarks/gpu_check.sh                 # on a GPU machine, ~9 min
#   TINY=1 OUT=/tmp/gc bash benchmarks/gpu_check.sh   # any CPU, ~2 min
#
# Everything it keeps goes to $OUT (default ./gpu_check_out), at most 8
# files and no folders: summary.txt (one line per measured figure), env.txt,
# log.txt (all output), benchmark_<N>stacks.json (two), metrics.jsonl and
# eval.json of the training run. Checkpoints, the compilation cache and the
# per-step logs stay in a scratch folder ($WORK, default a new temporary
# folder, deleted at the end unless KEEP_WORK=1): nothing is written into
# the repository when OUT is set elsewhere.
#
# If .whl/ holds wheels (benchmarks/fetch_gpu_wheels.sh), they are installed
# into $SITE (default /tmp/site) without network access, as the device
# README's recipe says. Each step runs under `timeout`; a failing step is
# reported and the next one runs; the exit status is 1 if any step failed.
# Every size below can be set from the environment.
set -euo pipefail

T0=$SECONDS
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "${OUT:-./gpu_check_out}")
cd "$ROOT"

TINY=${TINY:-0}
if [[ $TINY == 1 ]]; then
  # A CPU-sized run of every step: tiny model, 32x32 inputs, a few steps.
  : "${STACKS:=1}" "${STACKS2:=2}" "${FEATURES:=16}" "${DEPTH:=1}"
  : "${SIZE:=32}" "${BATCH:=4}" "${DTYPE:=bfloat16}"
  : "${BENCH_STEPS:=2}" "${BENCH_WARMUP:=1}"
  : "${TWIN_BATCH:=2}" "${TWIN_ROUNDS:=1}" "${TWIN_STEPS:=1}"
  : "${TWIN_STACKS:=$STACKS2}"  # one twin run is enough to test the step
  : "${TRAIN_STEPS:=4}" "${TRAIN_LOG_EVERY:=2}" "${TRAIN_WORKERS:=0}"
  : "${DATA_FLAGS:=--config.dataset.synthetic.num_train=64 --config.dataset.synthetic.num_eval=8 --config.dataset.synthetic.image_size=(64,64) --config.input.num_threads=1}"
  : "${TOTAL_SECONDS:=1800}" "${STEP_TIMEOUT:=300}" "${EVAL_TIMEOUT:=300}"
  : "${TRAIN_MIN_SECONDS:=60}"
else
  # The paper's hourglass (8 stacks x 256, depth 4, 256x256) in bf16 with
  # a GPU-sized batch; the whole script within 9 minutes of an H200.
  : "${STACKS:=8}" "${STACKS2:=2}" "${FEATURES:=256}" "${DEPTH:=4}"
  : "${SIZE:=256}" "${BATCH:=32}" "${DTYPE:=bfloat16}"
  : "${BENCH_STEPS:=20}" "${BENCH_WARMUP:=3}"
  : "${TWIN_BATCH:=$BATCH}" "${TWIN_ROUNDS:=3}" "${TWIN_STEPS:=10}"
  # Training normally ends at its time limit (SIGTERM: the trainer saves a
  # checkpoint and exits 0); TRAIN_STEPS only caps it.
  : "${TRAIN_STEPS:=5000}" "${TRAIN_LOG_EVERY:=25}" "${TRAIN_WORKERS:=12}"
  : "${DATA_FLAGS:=}"
  : "${TOTAL_SECONDS:=530}" "${STEP_TIMEOUT:=180}" "${EVAL_TIMEOUT:=90}"
  : "${TRAIN_MIN_SECONDS:=90}"
fi
: "${PARTS:=bench twin train}"  # which of the steps c and d to run
: "${BENCH_STACKS:=$STACKS $STACKS2}"
: "${TWIN_STACKS:=$STACKS $STACKS2}"
: "${INPUT_BATCHES:=0}"       # benchmark's input-pipeline timing (0: skip)
: "${TRAIN_BATCH:=$BATCH}"
: "${TRAIN_SECONDS:=auto}"    # auto: what is left of TOTAL_SECONDS
: "${TWIN_DEVICE:=auto}"      # cpu, cuda or auto (cuda when torch sees one)
: "${TWIN_THREADS:=2}"        # CPU cores of the twin with TWIN_DEVICE=cpu
: "${EXTRA_FLAGS:=}"          # more --config.* flags for every hpe_jax run
: "${PYTHON:=python3}"
: "${WHEEL_DIR:=$ROOT/.whl}"
: "${SITE:=/tmp/site}"
: "${KEEP_WORK:=0}"

mkdir -p "$OUT"
if [[ -z "${WORK:-}" ]]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
  [[ $KEEP_WORK == 1 ]] || trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK"
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
: > "$OUT/log.txt"
exec > >(tee -a "$OUT/log.txt") 2>&1

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export JAX_COMPILATION_CACHE_DIR=$WORK/jax_cache
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
# shellcheck disable=SC2206
DATA=($DATA_FLAGS $EXTRA_FLAGS)

left() { echo $((TOTAL_SECONDS - (SECONDS - T0))); }
# A step's time limit: its own, but leaving `reserve` seconds for later ones.
limit() { local l=$(($(left) - $2)); echo $((l < $1 ? l : $1)); }
FAILED=0
note() { echo "$*" | tee -a "$SUMMARY"; }

# run_step NAME LIMIT [--stop_ok] CMD...: runs CMD under `timeout`, output
# to the log and to $WORK/NAME.log; sets RC (0, the command's status, 124
# when stopped at LIMIT, or 'skipped' when LIMIT is under 20 s). With
# --stop_ok, SIGTERM at LIMIT goes to CMD alone (not its worker processes)
# and RC is CMD's own status: 0 when it saved and stopped cleanly.
run_step() {
  local name=$1 secs=$2 t=$SECONDS; shift 2
  local opts=(-s TERM -k 30)
  if [[ $1 == --stop_ok ]]; then
    opts=(--foreground --preserve-status "${opts[@]}")
    shift
  fi
  echo
  echo "=== [$name] at $((SECONDS - T0)) s, limit ${secs} s: $*"
  if ((secs < 20)); then
    RC=skipped
    note "SKIPPED $name: ${secs} s left | cmd: $*"
    return 0
  fi
  set +e
  timeout "${opts[@]}" "$secs" "$@" 2>&1 | tee "$WORK/$name.log"
  RC=${PIPESTATUS[0]}
  set -e
  echo "=== [$name] exit $RC after $((SECONDS - t)) s"
  if [[ $RC != 0 ]]; then
    FAILED=1
    note "FAILED $name: exit $RC$([[ $RC == 124 ]] && echo ' (timed out)') after $((SECONDS - t)) s | cmd: $*"
  fi
}

# summarize KIND DESCRIPTION FILE COMMAND...: appends the figures of a step
# to summary.txt, one line each.
summarize() {
  local kind=$1 desc=$2 file=$3; shift 3
  "$PYTHON" - "$kind" "$desc" "$file" "$*" <<'PY' | tee -a "$SUMMARY" || true
import json, os, statistics, sys
kind, desc, path, cmd = sys.argv[1:5]
device = os.environ.get('GPU_CHECK_DEVICE', '?')
def fmt(x, spec='.1f'):
  return '-' if x is None else format(x, spec)
if kind == 'bench':
  r = json.load(open(path))
  shape = 'x'.join(map(str, r['image_size']))
  head = f"{r['device']} | {desc} | {shape} | batch {r['batch_size']} | {r['dtype']}"
  frac = r.get('train_fraction_of_peak')
  frac = f', {100 * frac:.1f}% of {r["dtype"]} peak' if frac else ''
  print(f"{head} | train step (hpe_jax.benchmark) | "
        f"{r['train_images_per_s']:.1f} images/s ({r['train_step_ms']:.1f} "
        f"ms/step, {fmt(r['train_gflops_per_image'], '.4g')} GFLOP/image{frac}, "
        f"compile {r['compile_s']:.0f} s, peak memory "
        f"{fmt(r['peak_memory_gib'], '.1f')} GiB) | cmd: {cmd}")
  print(f"{head} | eval step (hpe_jax.benchmark, flip "
        f"{'on' if r['eval_flip_test'] else 'off'}) | "
        f"{r['eval_images_per_s']:.1f} images/s "
        f"({fmt(r['eval_gflops_per_image'], '.4g')} GFLOP/image) | cmd: {cmd}")
  if 'input_images_per_s' in r:
    print(f"{head} | input pipeline alone ({r['input_workers']} workers) | "
          f"{r['input_images_per_s']:.1f} images/s | cmd: {cmd}")
elif kind == 'twin':
  header, rows = '', {}
  for line in open(path):
    parts = line.split()
    if line.startswith('hourglass '):
      header = line.strip()
    elif len(parts) == 4 and parts[0] in ('hpe_jax', 'trainer', 'torch'):
      rows[parts[0]] = [float(p) for p in parts[1:]]
    elif len(parts) == 3 and parts[0].endswith('/torch'):
      rows[parts[0]] = parts[1:]
  if not rows:
    sys.exit(f'no figures in {path}')
  # header: hourglass S stacks x F, depth D, HxW, batch B, DTYPE, WHERE, jax V on P
  fields = [f.strip() for f in header.split(',')]
  batch, dtype, where = fields[3], fields[4], fields[5]
  jax_on = header.rsplit(' on ', 1)[-1]
  for name, value in rows.items():
    if name.endswith('/torch'):
      print(f"{device} | {desc} | {batch} | {dtype} | {name} speed ratio "
            f"(> 1: hpe_jax faster) | train {value[0]}, eval {value[1]} | "
            f"cmd: {cmd}")
      continue
    on = f'jax on {jax_on}' if name != 'torch' else (
        'torch on cuda' if where == 'torch on cuda' else f'torch, {where}')
    step_s, train, evaluate = value
    print(f"{device} | {desc} | {batch} | {dtype} | {name} train step "
          f"({on}) | {train:.1f} images/s ({1000 * step_s:.1f} ms/step) | "
          f"cmd: {cmd}")
    print(f"{device} | {desc} | {batch} | {dtype} | {name} eval step "
          f"({on}) | {evaluate:.1f} images/s | cmd: {cmd}")
elif kind == 'train':
  lines = [json.loads(l) for l in open(path) if l.strip()]
  train = [l for l in lines if 'train/examples_per_sec' in l]
  if not train:
    sys.exit(f'no training lines in {path}')
  # The first logged interval holds the compilation.
  steady = [l['train/examples_per_sec'] for l in train[1:]] or [
      train[0]['train/examples_per_sec']]
  last = train[-1]
  print(f"{device} | {desc} | training run on synthetic people "
        f"(hpe_jax.main) | {statistics.median(steady):.1f} images/s (median "
        f"of {len(steady)} logged intervals{' after the first' if len(train) > 1 else ''}; "
        f"last logged step {last['step']}, loss {last['train/loss']:.4g}) | "
        f"cmd: {cmd}")
elif kind == 'eval':
  r = json.load(open(path))
  metrics = ', '.join(f'{k} {v:.4f}' for k, v in r['metrics'].items()
                      if isinstance(v, (int, float)))
  print(f"{device} | {desc} | evaluation of step {r['step']} "
        f"(hpe_jax.evaluate, {r['examples']} examples) | {metrics} | "
        f"cmd: {cmd}")
PY
}

echo "gpu_check: TINY=$TINY, out $OUT, scratch $WORK, python $PYTHON"
# The device machine gets the files without .git.
if COMMIT=$(git rev-parse --short HEAD 2>/dev/null); then
  git diff --quiet HEAD 2>/dev/null || COMMIT+=' with local changes'
else
  COMMIT='unknown (no git)'
fi

# --- a. wheels the device image lacks --------------------------------------
if compgen -G "$WHEEL_DIR/*.whl" > /dev/null; then
  echo "=== installing $(ls "$WHEEL_DIR"/*.whl | wc -l) wheels from $WHEEL_DIR into $SITE"
  if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$SITE" "$WHEEL_DIR"/*.whl; then
    export PYTHONPATH=$PYTHONPATH:$SITE
  else
    FAILED=1
    note "FAILED wheels: pip install from $WHEEL_DIR"
  fi
fi
echo "PYTHONPATH=$PYTHONPATH"

# --- b. environment -----------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "host: $(uname -srm), $(nproc) CPU cores"
  echo "commit: $COMMIT"
  echo "sizes: TINY=$TINY STACKS=$STACKS STACKS2=$STACKS2 FEATURES=$FEATURES DEPTH=$DEPTH SIZE=$SIZE BATCH=$BATCH DTYPE=$DTYPE TRAIN_BATCH=$TRAIN_BATCH TRAIN_STEPS=$TRAIN_STEPS TRAIN_WORKERS=$TRAIN_WORKERS TOTAL_SECONDS=$TOTAL_SECONDS"
  if command -v nvidia-smi > /dev/null; then
    timeout 30 nvidia-smi || true
    timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv || true
  else
    echo "nvidia-smi: not found"
  fi
  timeout 180 "$PYTHON" - "$WORK/probe.sh" <<'PY' || echo "python environment probe failed"
import importlib, importlib.metadata as md, sys
found = {}
print('python', sys.version.split()[0], sys.executable)
for name in ('jax', 'jaxlib', 'jax-cuda13-plugin', 'jax-cuda12-plugin',
             'flax', 'optax', 'orbax-checkpoint', 'chex', 'numpy', 'scipy',
             'opencv-python-headless', 'etils', 'protobuf', 'grain',
             'array-record', 'ml-collections', 'clu', 'pycocotools',
             'tensorboardX', 'portpicker', 'torch'):
  try:
    print(f'  {name} {md.version(name)}')
  except md.PackageNotFoundError:
    print(f'  {name} -')
for module in ('hpe_jax', 'grain', 'clu', 'ml_collections', 'pycocotools',
               'tensorboardX', 'cv2'):
  try:
    importlib.import_module(module)
  except Exception as e:  # pylint: disable=broad-except
    print(f'import {module}: FAILED: {type(e).__name__}: {e}')
import jax
print('jax backend:', jax.default_backend())
print('jax devices:', jax.devices())
devices = jax.devices()
found['GPU_CHECK_DEVICE'] = f'{len(devices)} x {devices[0].device_kind}'
try:
  import torch
  print('torch', torch.__version__, 'cuda available:',
        torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
  found['HAVE_TORCH'] = 1
  found['TORCH_CUDA'] = int(torch.cuda.is_available())
except ImportError:
  print('torch: not installed')
with open(sys.argv[1], 'w') as f:
  for key, value in found.items():
    f.write(f"{key}='{value}'\n")
PY
} 2>&1 | tee "$OUT/env.txt"
GPU_CHECK_DEVICE='?' HAVE_TORCH=0 TORCH_CUDA=0
# shellcheck disable=SC1091
if [[ -f $WORK/probe.sh ]]; then . "$WORK/probe.sh"; fi
export GPU_CHECK_DEVICE
if [[ $TWIN_DEVICE == auto ]]; then
  TWIN_DEVICE=cpu
  if ((TORCH_CUDA)); then TWIN_DEVICE=cuda; fi
fi
echo "device: $GPU_CHECK_DEVICE; torch: $HAVE_TORCH; twin on $TWIN_DEVICE"
note "# gpu_check $(date -u '+%Y-%m-%d %H:%M UTC'), $GPU_CHECK_DEVICE, commit $COMMIT, TINY=$TINY"

# After the training: its final save (up to 30 s more, then it is killed)
# and the summary lines.
TRAIN_TAIL=45
# The training's minimum time and the evaluation's, kept free while the
# speed steps run.
RESERVE=$((TRAIN_MIN_SECONDS + EVAL_TIMEOUT + TRAIN_TAIL + 5))
model_flags() {  # STACKS BATCH
  echo "--config.model.num_stacks=$1 --config.model.features=$FEATURES" \
       "--config.model.depth=$DEPTH --config.model.dtype=$DTYPE" \
       "--config.input.image_size=($SIZE,$SIZE)" \
       "--config.input.batch_size=$2 --config.input.eval_batch_size=$2"
}

# --- c. speed -------------------------------------------------------------------
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
has_part bench || BENCH_STACKS=
has_part twin || TWIN_STACKS=
for stacks in $BENCH_STACKS; do
  desc="hourglass $stacks stacks x $FEATURES, depth $DEPTH"
  json=$OUT/benchmark_${stacks}stacks.json
  # shellcheck disable=SC2046
  cmd=("$PYTHON" -m hpe_jax.benchmark --config=configs/hourglass.py
       $(model_flags "$stacks" "$BATCH") ${DATA[@]+"${DATA[@]}"}
       --steps="$BENCH_STEPS" --warmup="$BENCH_WARMUP"
       --input_batches="$INPUT_BATCHES" --output="$json")
  run_step "benchmark_${stacks}stacks" "$(limit "$STEP_TIMEOUT" "$RESERVE")" "${cmd[@]}"
  if [[ $RC == 0 ]]; then summarize bench "$desc" "$json" "${cmd[@]}"; fi
done

for stacks in $TWIN_STACKS; do
  desc="hourglass $stacks stacks x $FEATURES, depth $DEPTH, ${SIZE}x${SIZE}"
  cmd=(env XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 "$PYTHON"
       benchmarks/hourglass_vs_torch.py --stacks="$stacks"
       --features="$FEATURES" --depth="$DEPTH" --size="$SIZE"
       --batch="$TWIN_BATCH" --rounds="$TWIN_ROUNDS" --steps="$TWIN_STEPS"
       --device="$TWIN_DEVICE" --dtype="$DTYPE" --threads="$TWIN_THREADS")
  if ((!HAVE_TORCH)); then
    note "SKIPPED twin_${stacks}stacks: torch is not installed | cmd: ${cmd[*]}"
    continue
  fi
  run_step "twin_${stacks}stacks" "$(limit "$STEP_TIMEOUT" "$RESERVE")" "${cmd[@]}"
  if [[ $RC == 0 ]]; then
    summarize twin "$desc" "$WORK/twin_${stacks}stacks.log" "${cmd[@]}"
  fi
done

# --- d. training on synthetic people, then its evaluation -------------------
train_cmd() {  # WORKDIR WORKERS
  # shellcheck disable=SC2046
  echo "$PYTHON" -m hpe_jax.main --config=configs/hourglass.py \
    --workdir="$1" --compilation_cache="$JAX_COMPILATION_CACHE_DIR" \
    $(model_flags "$STACKS" "$TRAIN_BATCH") ${DATA[@]+"${DATA[@]}"} \
    --config.total_steps="$TRAIN_STEPS" --config.log_every="$TRAIN_LOG_EVERY" \
    --config.eval_every=0 --config.checkpoint_every="$TRAIN_STEPS" \
    --config.input.num_workers="$2"
}
train_limit() {
  local secs
  secs=$(limit 100000 $((EVAL_TIMEOUT + TRAIN_TAIL)))
  if [[ $TRAIN_SECONDS != auto ]] && ((TRAIN_SECONDS < secs)); then
    secs=$TRAIN_SECONDS
  fi
  ((secs >= TRAIN_MIN_SECONDS)) || secs=0
  echo "$secs"
}
desc="hourglass $STACKS stacks x $FEATURES, depth $DEPTH, ${SIZE}x${SIZE} | batch $TRAIN_BATCH | $DTYPE"
workdir=$WORK/train
# The words of train_cmd hold no spaces.
read -r -a cmd <<< "$(train_cmd "$workdir" "$TRAIN_WORKERS")"
RC=skipped
# A stop at the time limit is the normal end: the trainer saves and exits 0.
if has_part train; then
  run_step train "$(train_limit)" --stop_ok "${cmd[@]}"
fi
if grep -qs 'Preempted: checkpoint saved' "$WORK/train.log"; then
  echo "=== the training was stopped at its time limit, after a checkpoint"
fi
if [[ $RC != 0 && $RC != skipped && $TRAIN_WORKERS != 0 ]] &&
    ! compgen -G "$workdir/checkpoints/*" > /dev/null; then
  echo "=== training failed with $TRAIN_WORKERS input workers: again with threads only"
  workdir=$WORK/train_threads
  read -r -a cmd <<< "$(train_cmd "$workdir" 0)"
  run_step train_threads "$(train_limit)" --stop_ok "${cmd[@]}"
fi
if [[ -s $workdir/metrics.jsonl ]]; then
  cp "$workdir/metrics.jsonl" "$OUT/metrics.jsonl"
  summarize train "$desc" "$workdir/metrics.jsonl" "${cmd[@]}"
fi

if compgen -G "$workdir/checkpoints/*" > /dev/null; then
  cmd=("$PYTHON" -m hpe_jax.evaluate --workdir="$workdir" --checkpoint=latest)
  run_step evaluate "$(limit "$EVAL_TIMEOUT" 0)" "${cmd[@]}"
  eval_json=$(ls -t "$workdir"/eval/step*.json 2>/dev/null | grep -v _results | head -1 || true)
  if [[ $RC == 0 && -n $eval_json ]]; then
    cp "$eval_json" "$OUT/eval.json"
    summarize eval "$desc" "$eval_json" "${cmd[@]}"
  fi
elif has_part train; then
  note "SKIPPED evaluate: the training left no checkpoint"
  FAILED=1
fi

# --- e. summary -----------------------------------------------------------------
note "# done in $((SECONDS - T0)) s$( ((FAILED)) && echo ', with failures')"
echo
echo "=== gpu_check done in $((SECONDS - T0)) s; $OUT holds: $(cd "$OUT" && ls | tr '\n' ' ')"
echo "=== summary.txt:"
cat "$SUMMARY"
exit "$FAILED"
