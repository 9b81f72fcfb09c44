#!/usr/bin/env bash
# Regenerate the files derived from the code: tools/*.json (the tool catalogue) and the
# generated reference at the end of docs/calculators.md, the family table of docs/suite.md.
# Tests fail when these are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet
bin=target/debug/emrgym
"$bin" tools export --out tools
doc=docs/calculators.md
marker='<!-- BEGIN GENERATED: emrgym calc list --markdown -->'
head_part=$(awk -v m="$marker" '{print} $0==m {exit}' "$doc")
{
  printf '%s\n' "$head_part"
  "$bin" calc list --markdown
  printf '%s\n' '<!-- END GENERATED -->'
} > "$doc.tmp"
mv "$doc.tmp" "$doc"
echo "regenerated tools/ and $doc"
doc=docs/suite.md
marker='<!-- BEGIN GENERATED: emrgym scenarios list --markdown -->'
head_part=$(awk -v m="$marker" '{print} $0==m {exit}' "$doc")
{
  printf '%s\n' "$head_part"
  "$bin" scenarios list --markdown
  printf '%s\n' '<!-- END GENERATED -->'
} > "$doc.tmp"
mv "$doc.tmp" "$doc"
echo "regenerated $doc"
