#!/usr/bin/env python3
"""The table of scripts/speed-vs-build.sh: OUT/walltime.tsv and the two run directories
OUT/base and OUT/current, as Markdown on stdout.

    python3 scripts/speed-table.py OUT

Per build: episodes, the wall time of the whole run (model load included), episodes per hour
and its ratio to the base, the model time (the sum of every reply's recorded latency), prompt
tokens evaluated, successes and mean progress. Per instance: each build's end, steps, grade and
model time, and whether the grade (success and progress) is the same.
"""
import json
import os
import sys


def episodes(run):
    """The run's last result line of each instance, in file order."""
    out = {}
    with open(os.path.join(run, "results.jsonl")) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                out[r["instance"]] = r
    return out


def trajectory(run, r):
    """Model time (s) and grader version from the episode's trajectory, if it was written."""
    path = os.path.join(run, "trajectories", f"{r['instance']}.{r.get('trial', 0)}.jsonl")
    if not os.path.exists(path):
        return None, None
    ms, grader = 0, None
    with open(path) as f:
        for i, line in enumerate(f):
            e = json.loads(line)
            if i == 0:
                grader = e.get("grader_version")
            if e.get("type") == "model_reply":
                ms += e.get("latency_ms") or 0
    return ms / 1000.0, grader


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: speed-table.py OUT")
    out = sys.argv[1]
    walls = {}
    with open(os.path.join(out, "walltime.tsv")) as f:
        for line in f:
            name, label, version, wall = line.rstrip("\n").split("\t")
            walls[name] = (label, version, int(wall) / 1000.0)
    missing = [n for n in ("base", "current") if n not in walls]
    if missing:
        sys.exit(f"speed-table: no wall time for {', '.join(missing)} in {out}/walltime.tsv (run not finished)")
    runs = {n: episodes(os.path.join(out, n)) for n in ("base", "current")}
    if list(runs["base"]) != list(runs["current"]):
        sys.exit(f"speed-table: the runs hold different instances: {list(runs['base'])} and {list(runs['current'])}")
    ids = list(runs["base"])
    rows, model = {}, {}
    for n in ("base", "current"):
        t = [trajectory(os.path.join(out, n), r) for r in runs[n].values()]
        model[n] = {i: x for i, x in zip(ids, t)}
        rs = list(runs[n].values())
        label, version, wall = walls[n]
        rows[n] = {
            "label": label,
            "version": version,
            "wall": wall,
            "eph": len(rs) * 3600.0 / max(wall, 0.001),
            "model": sum(x[0] or 0 for x in t),
            "graders": sorted({x[1] for x in t if x[1] is not None}),
            "prompt": sum(r.get("prompt_tokens", 0) for r in rs),
            "success": sum(1 for r in rs if r.get("success")),
            "progress": sum(r.get("progress", 0.0) for r in rs) / len(rs),
        }
    base = rows["base"]["eph"]
    print(f"{len(ids)} instances: {', '.join(ids)}\n")
    print("| run | commit | `emrgym --version` | grader | wall s | episodes/hour | ratio | model time s | prompt tokens evaluated | success | mean progress |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---|---:|")
    for n in ("base", "current"):
        r = rows[n]
        graders = ", ".join(str(g) for g in r["graders"]) or "-"
        print(
            f"| {n} | {r['label']} | {r['version']} | {graders} | {r['wall']:,.1f} | {r['eph']:.1f} | {r['eph'] / base:.2f}x "
            f"| {r['model']:,.0f} | {r['prompt']:,} | {r['success']}/{len(ids)} | {r['progress']:.3f} |"
        )
    print()
    print("| instance | base: end, steps | base: success, progress | base model s | current: end, steps | current: success, progress | current model s | same grade |")
    print("|---|---|---|---:|---|---|---:|---|")
    for i in ids:
        b, c = runs["base"][i], runs["current"][i]
        same = bool(b.get("success")) == bool(c.get("success")) and abs(b.get("progress", 0) - c.get("progress", 0)) < 1e-9
        cell = lambda r: f"{r.get('end')}, {r.get('steps')}"
        grade = lambda r: f"{'pass' if r.get('success') else 'fail'}, {r.get('progress', 0):.2f}"
        secs = lambda n: "-" if model[n][i][0] is None else f"{model[n][i][0]:,.0f}"
        print(f"| {i} | {cell(b)} | {grade(b)} | {secs('base')} | {cell(c)} | {grade(c)} | {secs('current')} | {'yes' if same else 'no'} |")


if __name__ == "__main__":
    main()
