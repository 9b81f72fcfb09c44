#!/usr/bin/env bash
# The results table in one command: every model x condition x suite of docs/results.md, each
# a run directory under OUT, resumable (run it again after an interruption and it finishes
# what is missing), then the leaderboard over every run directory under OUT.
#
#   scripts/results.sh                      # the three local models, quick and horizon
#   MODELS="openai:MODEL@http://HOST:PORT/v1" CONCURRENCY=8 scripts/results.sh
#   MODELS=oracle SUITES=quick MODES=flat OUT=/tmp/r scripts/results.sh    # a smoke test
#
# Settings (environment):
#   MODELS       local model names, .gguf files, openai:MODEL@BASE_URL, or the reference
#                agents oracle and null (default: smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b)
#   MODES        flat guided goal (the horizon suite has no goal, so goal skips it); outline
#                (the task network written out at the start, no planner) is run only when named
#   SUITES       quick horizon
#   TRIALS       3 (greedy decoding; trials differ only through their sandboxes' seeds)
#   SEED         0
#   THREADS      CPU threads of an in-process model (default: all cores; use 1 on a shared machine)
#   CONCURRENCY  episodes at once (default: 1 for an in-process model, 4 otherwise)
#   OUT          results
#   EMRGYM       the binary (default target/release/emrgym, built if missing)
#
# Writes OUT/MODEL-SUITE-MODE/ (run directories), OUT/MACHINE.md (the machine and the
# binary and the checkout's commit, appended at each start), OUT/walltime.tsv (seconds per run invocation),
# OUT/leaderboard.md and OUT/leaderboard.html (every run directory under OUT, earlier ones too).
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-"smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b"}
MODES=${MODES:-"flat guided goal"}
SUITES=${SUITES:-"quick horizon"}
TRIALS=${TRIALS:-3}
SEED=${SEED:-0}
THREADS=${THREADS:-$(nproc)}
OUT=${OUT:-results}
EMRGYM=${EMRGYM:-target/release/emrgym}
if [ ! -x "$EMRGYM" ]; then
  cargo build --release --quiet
fi
mkdir -p "$OUT"

# the checkout as it is before this script writes anything into it (MACHINE.md below is
# tracked when OUT is results/, so checking afterwards would always find a change)
checkout="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ', with uncommitted changes')"
{
  echo "## $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "- emrgym: $("$EMRGYM" --version 2>/dev/null || echo unknown) ($EMRGYM); this checkout at commit $checkout"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || echo unknown), $(nproc) cores"
  flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -xE 'avx|avx2|fma|f16c|avx512f|avx512_vnni|avx_vnni' | sort | tr '\n' ' ')
  echo "- vector extensions: ${flags:-none listed}"
  # every flag, so that two machines with the same model name can be told apart (the release
  # build uses target-cpu=native, .cargo/config.toml, so its code depends on them)
  echo "- CPU flags: $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //' || echo unknown)"
  echo "- memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | paste -sd ';')"
  else
    echo "- GPU: none"
  fi
  echo "- settings: MODELS=\"$MODELS\" MODES=\"$MODES\" SUITES=\"$SUITES\" TRIALS=$TRIALS SEED=$SEED THREADS=$THREADS CONCURRENCY=${CONCURRENCY:-default}"
  echo
} >>"$OUT/MACHINE.md"
[ -f "$OUT/walltime.tsv" ] || printf 'run\tstarted\tseconds\texit\n' >"$OUT/walltime.tsv"

for model in $MODELS; do
  case "$model" in
    oracle | null) who=(--agent "$model"); name=$model ;;
    *) who=(--model "$model"); name=$(basename "${model#openai:}" .gguf | tr '/@:' '___') ;;
  esac
  extra=()
  case "$model" in
    oracle | null | openai:*) ;;
    *) extra+=(--threads "$THREADS") ;;
  esac
  if [ -n "${CONCURRENCY:-}" ]; then
    extra+=(--concurrency "$CONCURRENCY")
  fi
  for suite in $SUITES; do
    for mode in $MODES; do
      if [ "$suite" = horizon ] && [ "$mode" = goal ]; then
        continue # the horizon chains have no goal (docs/suite.md)
      fi
      dir="$OUT/$name-$suite-$mode"
      started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
      t0=$(date +%s)
      set +e
      if [ -f "$dir/manifest.json" ]; then
        echo "== $dir: resuming" >&2
        "$EMRGYM" run --resume "$dir"
      else
        echo "== $dir" >&2
        "$EMRGYM" run "${who[@]}" "${extra[@]}" --suite "$suite" --mode "$mode" --trials "$TRIALS" --seed "$SEED" --out "$dir"
      fi
      rc=$?
      set -e
      printf '%s\t%s\t%s\t%s\n' "$dir" "$started" "$(($(date +%s) - t0))" "$rc" >>"$OUT/walltime.tsv"
      if [ "$rc" -ne 0 ]; then
        echo "$dir: emrgym run exited with $rc; run this script again to resume it" >&2
        exit "$rc"
      fi
    done
  done
done

# the table of every run under OUT, this invocation's and earlier ones' (another model, mode
# or suite run before), so OUT/leaderboard.* is never the table of a part of OUT
all=()
for d in "$OUT"/*/; do
  if [ -f "$d/manifest.json" ]; then
    all+=("${d%/}")
  fi
done
"$EMRGYM" leaderboard "${all[@]}" --markdown --out "$OUT/leaderboard.md"
"$EMRGYM" leaderboard "${all[@]}" --html --out "$OUT/leaderboard.html"
echo "wrote $OUT/leaderboard.md and $OUT/leaderboard.html (machine: $OUT/MACHINE.md, wall times: $OUT/walltime.tsv)" >&2
