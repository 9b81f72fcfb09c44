#!/usr/bin/env bash
# Regenerate the files derived from the code: tools/*.json (the tool catalogue), the
# generated reference at the end of docs/calculators.md, the family table of
# docs/suite.md and the named suites in scenarios/suites/. Tests fail when these are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin=target/debug/emrgym
"$bin" tools export --out tools
echo "regenerated tools/"

# replace what follows "<!-- BEGIN GENERATED: emrgym ARGS -->" in DOC with the output of ARGS
generated() {
  local doc=$1
  shift
  local marker="<!-- BEGIN GENERATED: emrgym $* -->"
  local head_part
  head_part=$(awk -v m="$marker" '{print} $0==m {exit}' "$doc")
  {
    printf '%s\n' "$head_part"
    "$bin" "$@"
    printf '%s\n' '<!-- END GENERATED -->'
  } > "$doc.tmp"
  mv "$doc.tmp" "$doc"
  echo "regenerated $doc"
}
generated docs/calculators.md calc list --markdown
generated docs/suite.md scenarios list --markdown
"$bin" scenarios suites --write
