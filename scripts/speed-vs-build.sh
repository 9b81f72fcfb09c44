#!/usr/bin/env bash
# Episodes per hour of this build against an earlier one, measured one after the other on the
# same machine (issue 18's "3x today's" target; docs/performance.md):
#
#   scripts/speed-vs-build.sh 455345a /tmp/speed        # the build before the issue's work
#
# Both builds run the same sample of instances, evenly spaced over a named suite's list (no
# choice of ours: ids[i*n/k] for i < k), with each build's own `emrgym run` and the same flags,
# the earlier build from its own worktree (so it reads its own scenarios). The earlier build is
# made by scripts/build-at.sh --commit (a worktree beside this checkout; minutes, once).
#
# Settings (environment):
#   EMRGYM   this build's binary (target/release/emrgym)
#   SUITE    the suite the sample is drawn from (quick)
#   SAMPLE   how many instances (8)
#   MODE     flat | guided | goal (flat: the only condition the earlier build may have)
#   THREADS  model threads (2; use the physical cores of an idle machine)
#   MODEL    a local model name; unset, each build's embedded default
#   AGENT    model (default), or oracle / null to measure the harness alone
#   BASE_EMRGYM, BASE_TREE  a binary of BASE already built and its checkout (this one), instead of
#            scripts/build-at.sh (the binary is not checked against BASE)
#
# Writes, under OUT (runs/speed-vs-BASE): base (the earlier build's run directory), current,
# walltime.tsv (one line a finished run: name, BASE or "this checkout", `emrgym --version`, wall
# milliseconds of the whole process, model load included) and speed.md (the table, also
# printed). A run with a line in walltime.tsv is not run again, so a second
# invocation only finishes what is missing and rebuilds the table; start from an empty OUT to
# measure again. Run it on an idle machine: other work on the cores makes llama.cpp's threads
# wait for each other and the wall times meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: scripts/speed-vs-build.sh BASE_COMMIT [OUT]" >&2
  exit 2
fi
BASE=$1
OUT=${2:-runs/speed-vs-$BASE}
EMRGYM=${EMRGYM:-target/release/emrgym}
SUITE=${SUITE:-quick}
SAMPLE=${SAMPLE:-8}
MODE=${MODE:-flat}
THREADS=${THREADS:-2}
if [ ! -x "$EMRGYM" ]; then
  echo "speed-vs-build: no emrgym binary at $EMRGYM (cargo build --release --locked, or set EMRGYM)" >&2
  exit 1
fi
suite_file="scenarios/suites/$SUITE.json"
if [ ! -f "$suite_file" ]; then
  echo "speed-vs-build: no suite $SUITE ($suite_file)" >&2
  exit 1
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ -n "${BASE_EMRGYM:-}" ]; then
  base_bin=$BASE_EMRGYM
  base_tree=${BASE_TREE:-$PWD}
else
  base_bin=$(scripts/build-at.sh --commit "$BASE")
  base_tree=$(cd "$(dirname "$base_bin")/../.." && pwd)
fi
picked=$(python3 - "$suite_file" "$SAMPLE" <<'EOF'
import json, sys
ids = json.load(open(sys.argv[1]))["instances"]
k = int(sys.argv[2])
if not 1 <= k <= len(ids):
    sys.exit(f"SAMPLE must be 1 to {len(ids)} (got {k})")
for i in range(k):
    print(ids[i * len(ids) // k])
EOF
)
mapfile -t sample <<< "$picked"
echo "speed-vs-build: sample of $SAMPLE from $SUITE: ${sample[*]}" >&2
AGENT=${AGENT:-model}
args=(run --mode "$MODE")
if [ "$AGENT" = model ]; then
  args+=(--threads "$THREADS")
  if [ -n "${MODEL:-}" ]; then
    args+=(--model "$MODEL")
  fi
else
  args+=(--agent "$AGENT")
fi
for id in "${sample[@]}"; do
  args+=(--instance "$id")
done
touch "$OUT/walltime.tsv"
one() { # NAME LABEL BIN TREE
  local name=$1 label=$2 bin=$3 tree=$4
  if grep -q "^$name	" "$OUT/walltime.tsv"; then
    echo "speed-vs-build: $name already measured ($OUT/walltime.tsv)" >&2
    return
  fi
  rm -rf "${OUT:?}/$name"
  local version start end
  version=$("$bin" --version)
  echo "speed-vs-build: $name: $version, from $tree" >&2
  start=$(date +%s%3N)
  (cd "$tree" && "$bin" "${args[@]}" --out "$OUT/$name" >&2)
  end=$(date +%s%3N)
  printf '%s\t%s\t%s\t%s\n' "$name" "$label" "$version" "$((end - start))" >> "$OUT/walltime.tsv"
}
one base "$BASE" "$base_bin" "$base_tree"
one current "this checkout" "$(cd "$(dirname "$EMRGYM")" && pwd)/$(basename "$EMRGYM")" "$PWD"
# the table replaces the last one only when it can be built (a refusal keeps the old one)
python3 scripts/speed-table.py "$OUT" > "$OUT/speed.md.new" || { rm -f "$OUT/speed.md.new"; exit 1; }
mv "$OUT/speed.md.new" "$OUT/speed.md"
cat "$OUT/speed.md"
