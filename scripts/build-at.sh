#!/usr/bin/env bash
# The emrgym binary of a run's build, to resume the run with the build that started it
# (`emrgym run --resume` refuses another build; docs/results.md), or of any commit (`--commit C`,
# to measure an earlier build beside this one: scripts/speed-vs-build.sh). Prints the binary's
# path on stdout; what it does goes to stderr.
#
#   scripts/build-at.sh results/qwen2.5-coder-0.5b-quick-flat
#   EMRGYM=$(scripts/build-at.sh results/qwen2.5-coder-0.5b-quick-flat) scripts/results.sh
#   scripts/build-at.sh --commit 455345a
#
# The run's manifest names its build (`emrgym --version`: a commit, `+dirty.<hash>` when it was
# built from uncommitted changes, which cannot be rebuilt from git). If $EMRGYM (default
# target/release/emrgym) already is that build, that is the answer. Otherwise the commit is
# checked out in a git worktree beside this checkout (../emrgym-at-COMMIT) and built there
# in release mode (minutes; once).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 2 ] && [ "$1" = --commit ]; then
  build=$(git rev-parse --verify --quiet "$2^{commit}" || true)
  if [ -z "$build" ]; then
    echo "build-at: $2 is not a commit of this repository" >&2
    exit 1
  fi
  build=${build:0:12}
  run="--commit $2"
elif [ $# -eq 1 ] && [[ "$1" != --* ]]; then
  run=$1
  if [ ! -f "$run/manifest.json" ]; then
    echo "build-at: $run is not a run directory (no manifest.json)" >&2
    exit 1
  fi
  build=$(grep -o '"build": *"[^"]*"' "$run/manifest.json" | head -1 | sed 's/.*"\([^"]*\)"$/\1/' || true)
  if [ -z "$build" ] || [ "$build" = unknown ]; then
    echo "build-at: $run/manifest.json records no build (a run from before builds were recorded, or built outside git); resume it with --allow-other-build" >&2
    exit 1
  fi
  case "$build" in
    *+dirty.*)
      echo "build-at: $run was run by build $build, made from uncommitted changes, which git cannot rebuild; resume it with --allow-other-build, or start it again" >&2
      exit 1
      ;;
  esac
else
  echo "usage: scripts/build-at.sh RUN_DIR | scripts/build-at.sh --commit COMMIT" >&2
  exit 2
fi
EMRGYM=${EMRGYM:-target/release/emrgym}
if [ -x "$EMRGYM" ] && "$EMRGYM" --version | grep -qF "(build $build)"; then
  echo "build-at: $EMRGYM is build $build" >&2
  echo "$EMRGYM"
  exit 0
fi
if ! git cat-file -e "$build^{commit}" 2>/dev/null; then
  echo "build-at: commit $build (the build of $run) is not in this repository; fetch it first" >&2
  exit 1
fi
tree="$(cd .. && pwd)/emrgym-at-$build"
if [ ! -d "$tree" ]; then
  echo "build-at: checking out $build in $tree" >&2
  git worktree add --detach "$tree" "$build" >&2
fi
echo "build-at: building $build in $tree (release)" >&2
(cd "$tree" && cargo build --release --locked >&2)
bin="$tree/target/release/emrgym"
version=$("$bin" --version)
if [[ "$version" == *"(build "* ]]; then
  if [[ "$version" != *"(build $build)"* ]]; then
    echo "build-at: $bin reports $version, not build $build (has $tree been changed?)" >&2
    exit 1
  fi
elif [ "$(git -C "$tree" rev-parse HEAD)" != "$(git rev-parse "$build^{commit}")" ] || [ -n "$(git -C "$tree" status --porcelain)" ]; then
  # builds from before the version named its commit: the worktree must be the commit, clean
  echo "build-at: $tree is not a clean checkout of $build (has it been changed?)" >&2
  exit 1
fi
echo "$bin"
