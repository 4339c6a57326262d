#!/usr/bin/env bash
# Issue 24's CPU figures in one command: every bench its goals are judged by, in order, on an idle
# machine, each writing its section of bench/RESULTS.md (the CPU named there).  For the session that
# gets the 2-core Intel Xeon with AMX, where the goals are set; on any CPU it records what that CPU does.
#
#   bench/cpu_check.sh                 # about 60-90 minutes on 2 cores; logs in a fresh folder it names
#   bench/cpu_check.sh --dry-run       # print the commands only
#   ENGINE_REF=cb787e7 DEMO_REF= bench/cpu_check.sh   # the baselines (below); empty = no baseline
#
# In order (a step that fails is reported and the others still run; the screen run needs the demo's model):
#   1. bench/bench_engine.py --quick --against $ENGINE_REF  the measured GEMM limit per precision, training
#                                      and inference against it and against real Caffe (goals: bf16 training
#                                      >= 50%, fp32 >= 75% of the limit; bf16 inference >= 1,000 cells/s)
#   2. bench/bench_profile.py --ab-only  the training changes of issue 24 against the engine before them
#   3. bench/bench_screen.py           micrograph to call in one process: where the time goes
#   4. bench/bench_demo.py --keep [--against $DEMO_REF]   make demo after installation (goal <= 12 min)
#   5. bench/bench_screen_run.py --model <the demo's model> --speed --n 1000 --against $SCREEN_REF
#                                      a whole screen on a LocalCluster of 1 and 2 workers (goal >= 280 cells/s)
# Baselines (git commits; empty leaves the comparison out): ENGINE_REF and SCREEN_REF default to cb787e7,
# the tree before issue 24's engine and screen changes; DEMO_REF is empty by default (it doubles the
# demo's hour); bench_demo.py --against needs a commit with this tree's [project.scripts].
# Python: $PYTHON, else the checkout's .venv (make deps), else python3.  Exit status: 0 when every step
# ran, 1 when one failed (its log named), 2 on a bad argument.
set -u
cd "$(dirname "$0")/.." || exit 2
dry=0
for a in "$@"; do
  case $a in
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cpu_check: unknown argument $a (--dry-run, --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
ENGINE_REF=${ENGINE_REF-cb787e7}
SCREEN_REF=${SCREEN_REF-cb787e7}
DEMO_REF=${DEMO_REF-}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

work=$(mktemp -d "${TMPDIR:-/tmp}/cpu-check-XXXXXX")
steps=(
  "engine|bench/bench_engine.py --quick${ENGINE_REF:+ --against $ENGINE_REF}"
  "profile|bench/bench_profile.py --ab-only"
  "screen|bench/bench_screen.py"
  "demo|bench/bench_demo.py --keep --workdir $work/demo${DEMO_REF:+ --against $DEMO_REF}"
  "screen_run|bench/bench_screen_run.py --model MODEL --speed --n 1000${SCREEN_REF:+ --against $SCREEN_REF}"
)
if [ $dry = 1 ]; then
  for s in "${steps[@]}"; do echo "$PY ${s#*|}"; done
  rmdir "$work"
  exit 0
fi

echo "cpu_check: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; logs in $work"
echo "cpu_check: flags that matter: $(grep -o -w -E 'avx512f|avx512_bf16|amx_bf16|amx_tile|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
load=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  echo "cpu_check: warning: 1-minute load average $load: other work shares the machine; figures will be pessimistic" >&2
fi
failed=()
for s in "${steps[@]}"; do
  name=${s%%|*}
  cmd=${s#*|}
  if [ "$name" = screen_run ]; then
    model=$(ls -d "$work"/demo/bench-demo-*/demo/model 2>/dev/null | head -1)
    if [ -z "$model" ]; then
      echo "cpu_check: $name: not run (no model from the demo step)" >&2
      failed+=("$name (no demo model)")
      continue
    fi
    cmd=${cmd/MODEL/$model}
  fi
  echo "cpu_check: [$(date -u +%H:%M:%S)] $name: $PY $cmd"
  # shellcheck disable=SC2086
  if ! "$PY" $cmd > "$work/$name.log" 2>&1; then
    echo "cpu_check: $name failed: $work/$name.log" >&2
    failed+=("$name ($work/$name.log)")
  fi
done
echo "cpu_check: [$(date -u +%H:%M:%S)] the goals as bench/RESULTS.md now states them:"
grep -E '^(Goals? \(issue 24\)|this tree \([0-9a-f]+\): the demo took|Micrograph to call:|This CPU.s ceiling)' bench/RESULTS.md
if [ ${#failed[@]} -gt 0 ]; then
  echo "cpu_check: failed: ${failed[*]}" >&2
  exit 1
fi
echo "cpu_check: every step ran; the demo's run folder is kept in $work/demo (remove it when done)"
