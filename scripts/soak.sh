#!/usr/bin/env bash
# Soak and fault test of issue 16 (docs/reliability.md, "Soak and faults"). NOT part of CI:
# it runs for minutes, kills processes and (as root) mounts a tmpfs.
#
#   scripts/soak.sh [all|soak|kill|disk]
#
#   soak  concurrent episodes through the HTTP episode API for SOAK_MINUTES minutes with
#         SOAK_WORKERS clients, the server's RSS sampled from /proc/PID/status every second;
#         prints min/max/final RSS, episodes, requests and errors (5xx, refused connections,
#         unexpected statuses)
#   kill  `emrgym run --agent oracle` killed with SIGKILL at KILLS random points and resumed
#         with --resume each time; results.jsonl and the trajectories must equal those of an
#         uninterrupted run (sorted lines; trajectory timing fields left out), no episode lost
#         or doubled
#   disk  the same run recording into a DISK_SIZE tmpfs that fills up: the run must stop with
#         an error naming the file and the OS error, every results.jsonl line and every
#         trajectory on the full disk must parse, and after space is freed (a bigger tmpfs)
#         --resume must finish with the same results as the uninterrupted run
#
# Environment: EMRGYM (the binary; default target/release/emrgym, else target/debug/emrgym,
# else $CARGO_TARGET_DIR's), SOAK_MINUTES (default 3), SOAK_WORKERS (8), SOAK_PORT (18480),
# KILLS (10), KILL_FAMILIES (families of the kill and disk runs, comma-separated; default
# all), KILL_TRIALS (trials per instance of those runs; default 2), DISK_SIZE (default 1M), SOAK_DIR (scratch directory; default a mktemp).
#
# The episode API may hand out per-episode tokens: when the POST /episodes answer has a
# `token` field, the client sends it as `Authorization: Bearer` on that episode's calls;
# SOAK_TOKEN, when set, is passed to the server as --token and sent on the other calls.
#
# Why a script and not a Rust test or example: it drives the real binary as an operator
# would (a server process to sample and a run to SIGKILL, a filesystem to fill), needs
# root for the tmpfs, and takes minutes: none of that belongs in `cargo test`.
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=${1:-all}
SOAK_MINUTES=${SOAK_MINUTES:-3}
SOAK_WORKERS=${SOAK_WORKERS:-8}
SOAK_PORT=${SOAK_PORT:-18480}
KILLS=${KILLS:-10}
DISK_SIZE=${DISK_SIZE:-1M}
KILL_FAMILIES=${KILL_FAMILIES:-}
KILL_TRIALS=${KILL_TRIALS:-2}
SOAK_DIR=${SOAK_DIR:-$(mktemp -d /tmp/emrgym-soak.XXXXXX)}
mkdir -p "$SOAK_DIR"

if [[ -z "${EMRGYM:-}" ]]; then
    for c in target/release/emrgym target/debug/emrgym "${CARGO_TARGET_DIR:-/nonexistent}/release/emrgym" "${CARGO_TARGET_DIR:-/nonexistent}/debug/emrgym"; do
        if [[ -x "$c" ]]; then EMRGYM=$c; break; fi
    done
fi
[[ -x "${EMRGYM:-}" ]] || { echo "soak: no emrgym binary (build it or set EMRGYM)" >&2; exit 2; }
EMRGYM=$(realpath "$EMRGYM")
echo "soak: binary $EMRGYM, scratch $SOAK_DIR, $(nproc) cores"

FAMILY_FLAGS=()
if [[ -n "$KILL_FAMILIES" ]]; then
    IFS=, read -ra fams <<<"$KILL_FAMILIES"
    for f in "${fams[@]}"; do FAMILY_FLAGS+=(--family "$f"); done
fi

# ---------------------------------------------------------------------------------------
soak() {
    local rec="$SOAK_DIR/episodes" log="$SOAK_DIR/serve.log" rss="$SOAK_DIR/rss.txt"
    rm -rf "$rec"
    local token_flags=()
    [[ -n "${SOAK_TOKEN:-}" ]] && token_flags=(--token "$SOAK_TOKEN")
    "$EMRGYM" serve --port "$SOAK_PORT" --suite scenarios --record "$rec" "${token_flags[@]}" >"$log" 2>&1 &
    local pid=$!
    trap 'kill $pid 2>/dev/null || true' RETURN
    for _ in $(seq 1 600); do
        curl -fs "http://127.0.0.1:$SOAK_PORT/health" >/dev/null 2>&1 && break
        kill -0 $pid 2>/dev/null || { echo "soak: server died"; cat "$log"; return 1; }
        sleep 0.2
    done
    : >"$rss"
    ( while kill -0 $pid 2>/dev/null; do
          awk '/^VmRSS/ {print $2}' "/proc/$pid/status" >>"$rss" 2>/dev/null || true
          sleep 1
      done ) &
    local sampler=$!
    echo "soak: server pid $pid on port $SOAK_PORT; $SOAK_WORKERS clients for $SOAK_MINUTES min"
    SOAK_URL="http://127.0.0.1:$SOAK_PORT" SOAK_SECONDS=$((SOAK_MINUTES * 60)) SOAK_WORKERS=$SOAK_WORKERS \
        python3 - <<'PY' | tee "$SOAK_DIR/soak.json"
import json, os, random, threading, time, urllib.request, urllib.error
url, secs, workers = os.environ["SOAK_URL"], int(os.environ["SOAK_SECONDS"]), int(os.environ["SOAK_WORKERS"])
server_token = os.environ.get("SOAK_TOKEN")
lock = threading.Lock()
stats = {"episodes": 0, "requests": 0, "errors": 0, "status": {}, "error_samples": []}

def call(method, path, body=None, token=None, expect=(200, 201)):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path if path.startswith("/") else path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    tok = token or server_token
    if tok:
        req.add_header("Authorization", "Bearer " + tok)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    except Exception as e:  # refused, reset, timeout
        status, text = 0, repr(e).encode()
    with lock:
        stats["requests"] += 1
        stats["status"][str(status)] = stats["status"].get(str(status), 0) + 1
        if status not in expect:
            stats["errors"] += 1
            if len(stats["error_samples"]) < 10:
                stats["error_samples"].append(f"{method} {path} -> {status}: {text[:200]!r}")
    try:
        return status, json.loads(text)
    except Exception:
        return status, None

_, sc = call("GET", "/scenarios")
instances = [i["id"] for i in (sc or {}).get("instances", [])] or ["mab-k-001"]
deadline = time.time() + secs
rng = random.Random(16)

def worker(seed):
    r = random.Random(seed)
    while time.time() < deadline:
        st, ep = call("POST", "/episodes", {"instance": r.choice(instances)}, expect=(201,))
        if st != 201 or not ep:
            time.sleep(0.5)
            continue
        tok = ep.get("token")  # per-episode token, when the server hands one out
        base = ep["fhir_base"]
        for q in ["Patient?_count=5", "Observation?_count=20&_sort=-date", "MedicationRequest?_count=10", "Condition?_count=10"][: r.randint(1, 4)]:
            call("GET", f"{base}/{q}", token=tok)
        call("GET", f"/episodes/{ep['id']}", token=tok)
        call("POST", ep["finish_url"], {"answer": "soak"}, token=tok)
        call("DELETE", f"/episodes/{ep['id']}", token=tok)
        with lock:
            stats["episodes"] += 1

threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
t0 = time.time()
for t in threads: t.start()
for t in threads: t.join()
stats["seconds"] = round(time.time() - t0, 1)
print(json.dumps(stats))
PY
    sleep 2
    kill $sampler 2>/dev/null || true
    local lines
    lines=$(wc -l <"$rec/results.jsonl" 2>/dev/null || echo 0)
    python3 - "$rss" "$SOAK_DIR/soak.json" "$lines" <<'PY'
import json, sys
rss = [int(x) for x in open(sys.argv[1]).read().split()]
s = json.loads(open(sys.argv[2]).read())
mb = lambda k: round(k / 1024, 1)
print(f"soak: {s['seconds']} s, {s['episodes']} episodes, {s['requests']} requests, {s['errors']} errors, statuses {s['status']}")
print(f"soak: RSS MiB min {mb(min(rss))}, max {mb(max(rss))}, final {mb(rss[-1])} ({len(rss)} samples); results.jsonl lines {sys.argv[3]}")
for e in s["error_samples"]:
    print("soak: error:", e)
sys.exit(1 if s["errors"] else 0)
PY
}

# ---------------------------------------------------------------------------------------
# results.jsonl lines sorted, and every trajectory with timing fields removed, as one text
normalized() {
    python3 - "$1" <<'PY'
import json, os, sys
d = sys.argv[1]
TIMING = ("latency_ms", "wall_ms", "elapsed_ms", "started_at", "ended_at", "timestamp", "ts", "time_ms", "duration_ms", "created")
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in TIMING}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
lines = open(os.path.join(d, "results.jsonl")).read().splitlines()
out = ["results " + l for l in sorted(lines)]
keys = [(json.loads(l)["instance"], json.loads(l)["trial"]) for l in lines]
if len(keys) != len(set(keys)):
    out.append("DOUBLED episodes in results.jsonl")
tdir = os.path.join(d, "trajectories")
for name in sorted(os.listdir(tdir)):
    if name.endswith(".tmp"):
        out.append("LEFTOVER temporary file " + name)
        continue
    for l in open(os.path.join(tdir, name)).read().splitlines():
        out.append(name + " " + json.dumps(strip(json.loads(l)), sort_keys=True))
print("\n".join(out))
PY
}

ORACLE=("$EMRGYM" run --agent oracle --suite scenarios "${FAMILY_FLAGS[@]}" --concurrency 2 --trials "$KILL_TRIALS")
oracle_run() { "${ORACLE[@]}" "$@"; }

reference_run() {
    local ref="$SOAK_DIR/reference-$KILL_TRIALS"
    if [[ ! -f "$ref/summary.json" ]]; then
        rm -rf "$ref"
        local t0=$SECONDS
        oracle_run --out "$ref" >/dev/null 2>&1
        REF_SECONDS=$((SECONDS - t0))
        echo "kill: uninterrupted run: $(wc -l <"$ref/results.jsonl") episodes in ${REF_SECONDS} s"
    fi
    normalized "$ref" >"$SOAK_DIR/reference.txt"
}

kill_resume() {
    reference_run
    local run="$SOAK_DIR/killed" hits=0 i=0
    rm -rf "$run"
    local span=${REF_SECONDS:-20}
    (( span < 4 )) && span=4
    while (( i < KILLS )); do
        i=$((i + 1))
        # started directly (not through a function, whose subshell would take the SIGKILL
        # and leave the run going): $! is the emrgym process itself
        if [[ -f "$run/manifest.json" ]]; then
            "${ORACLE[@]}" --resume "$run" >/dev/null 2>&1 &
        else
            "${ORACLE[@]}" --out "$run" >/dev/null 2>&1 &
        fi
        local pid=$!
        # a random point within the first quarter of an uninterrupted run's time (start-up
        # and the resume's rewrite included), so that most kills land before the end
        local ms=$(( (RANDOM * 32768 + RANDOM) % (span * 250) + 100 ))
        sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
        if kill -KILL $pid 2>/dev/null; then hits=$((hits + 1)); fi
        wait $pid 2>/dev/null || true
        if pgrep -f -- "--resume $run" >/dev/null || pgrep -f -- "--out $run" >/dev/null; then
            echo "kill: a run is still going after its SIGKILL"; return 1
        fi
        local n
        n=$(grep -c . "$run/results.jsonl" 2>/dev/null) || true
        echo "kill: $i: SIGKILL after ${ms} ms; results.jsonl holds ${n:-0} lines"
    done
    echo "kill: $hits of $KILLS kills hit a running process; resuming to the end"
    if [[ -f "$run/manifest.json" ]]; then oracle_run --resume "$run" >/dev/null; else oracle_run --out "$run" >/dev/null; fi
    normalized "$run" >"$SOAK_DIR/killed.txt"
    if diff -q "$SOAK_DIR/reference.txt" "$SOAK_DIR/killed.txt" >/dev/null; then
        echo "kill: identical to the uninterrupted run ($(grep -c '^results ' "$SOAK_DIR/killed.txt") results, $(ls "$run/trajectories" | wc -l) trajectories, none lost or doubled)"
    else
        echo "kill: DIFFERENT from the uninterrupted run:"
        diff "$SOAK_DIR/reference.txt" "$SOAK_DIR/killed.txt" | head -20
        return 1
    fi
}

# ---------------------------------------------------------------------------------------
full_disk() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "disk: needs root to mount a tmpfs (or run under unshare -rm); skipped"
        return 0
    fi
    reference_run
    local mnt="$SOAK_DIR/tmpfs"
    mkdir -p "$mnt"
    mount -t tmpfs -o size="$DISK_SIZE" tmpfs "$mnt"
    trap 'umount "$mnt" 2>/dev/null || true' RETURN
    local run="$mnt/run" rc=0
    oracle_run --out "$run" >"$SOAK_DIR/disk.out" 2>"$SOAK_DIR/disk.err" || rc=$?
    echo "disk: the run on a $DISK_SIZE tmpfs exited $rc: $(grep -i -m1 'error' "$SOAK_DIR/disk.err" || tail -1 "$SOAK_DIR/disk.err")"
    [[ $rc -ne 0 ]] || { echo "disk: the run fit on the disk; lower DISK_SIZE"; return 1; }
    grep -q "No space left on device" "$SOAK_DIR/disk.err" || { echo "disk: the error does not name ENOSPC"; return 1; }
    # nothing torn: every line of results.jsonl, every trajectory file parses
    python3 - "$run" <<'PY'
import json, os, sys
d = sys.argv[1]
n = 0
for l in open(os.path.join(d, "results.jsonl")).read().splitlines():
    json.loads(l); n += 1
t = 0
for name in os.listdir(os.path.join(d, "trajectories")):
    assert not name.endswith(".tmp"), name
    for l in open(os.path.join(d, "trajectories", name)).read().splitlines():
        json.loads(l)
    t += 1
print(f"disk: on the full disk: {n} result lines and {t} trajectories, all parse")
PY
    # free space (grow the tmpfs in place) and finish the run where it stopped
    mount -o remount,size=256M "$mnt"
    oracle_run --resume "$run" >/dev/null
    normalized "$run" >"$SOAK_DIR/disk.txt"
    if diff -q "$SOAK_DIR/reference.txt" "$SOAK_DIR/disk.txt" >/dev/null; then
        echo "disk: resumed after space was freed: identical to the uninterrupted run"
    else
        echo "disk: resumed run DIFFERS from the uninterrupted run:"
        diff "$SOAK_DIR/reference.txt" "$SOAK_DIR/disk.txt" | head -20
        return 1
    fi
}

case "$MODE" in
    soak) soak ;;
    kill) kill_resume ;;
    disk) full_disk ;;
    all) soak; kill_resume; full_disk ;;
    *) echo "usage: $0 [all|soak|kill|disk]" >&2; exit 2 ;;
esac
