#!/usr/bin/env bash
# Times the README's "Try it" commands on this machine and prints them.
#
#   bash benchmarks/time_front_door.sh            # fourm-hf demo, and fourm-hf evaluate on 10 and 20 scenes
#   bash benchmarks/time_front_door.sh --tests    # also the whole test suite (python -m pytest -q)
#
# Each command runs once, as a user would run it, into a temporary folder. Wall time depends on what
# else runs on the machine, so the load average is printed beside each number. The per-scene cost of
# `fourm-hf evaluate` is the difference between 20 and 10 scenes (both with 10 caption prompts), which
# leaves out the fixed costs (loading, the trivial baseline's statistics, caption -> RGB).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

timed() {  # timed NAME COMMAND...: prints NAME, wall seconds, CPU seconds, load average before
  local name="$1"; shift
  local load; load="$(cut -d' ' -f1 /proc/loadavg)"
  local start; start="$(date +%s.%N)"
  /usr/bin/time -f "%U %S" -o "$WORK/cpu" "$@" >"$WORK/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$WORK/$name.log"; exit 1; }
  local end; end="$(date +%s.%N)"
  read -r user sys <"$WORK/cpu"
  printf "%-26s wall %7.1f s   cpu %7.1f s   load average before %s\n" "$name" \
    "$(echo "$end - $start" | bc)" "$(echo "$user + $sys" | bc)" "$load"
  echo "$end - $start" | bc >"$WORK/$name.wall"
  echo "$user + $sys" | bc >"$WORK/$name.cpu"
}

echo "machine: $(nproc --all) cores, OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}, $(python -c 'import torch; print("torch", torch.__version__)')"
timed demo fourm-hf demo --out "$WORK/demo" --no-progress
timed evaluate_10_scenes fourm-hf evaluate --checkpoint src/fourm_hf/checkpoints/fourm-scenes64 \
  --num-scenes 10 --caption-prompts 10 --batch-size 16 --seed 0 --out "$WORK/eval10.json"
timed evaluate_20_scenes fourm-hf evaluate --checkpoint src/fourm_hf/checkpoints/fourm-scenes64 \
  --num-scenes 20 --caption-prompts 10 --batch-size 16 --seed 0 --out "$WORK/eval20.json"
per_scene() { echo "($(cat "$WORK/evaluate_20_scenes.$1") - $(cat "$WORK/evaluate_10_scenes.$1")) / 10" | bc -l; }
printf "%-26s wall %7.1f s   cpu %7.1f s   (20 minus 10 scenes, / 10)\n" "evaluate, per scene" "$(per_scene wall)" "$(per_scene cpu)"
if [ "${1:-}" = "--tests" ]; then
  timed tests python -m pytest -q -p no:cacheprovider
  tail -1 "$WORK/tests.log"
fi
