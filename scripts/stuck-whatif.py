"""Usage: python3 scripts/stuck-whatif.py [--writes | --period P] EMRGYM RUN_DIR...

What the stuck limit (4 identical calls with identical results in a row; with --writes,
the same write made 4 times anywhere in the episode, ignoring a create's client-side id
and any meta, as emrgym_agent::model::repeated_write; with --period P, a cycle of P calls
with identical results made 4 times in a row, so P = 1 is the limit itself and P = 2 an
A, B, A, B, ... loop) would have done to recorded runs:
for each trajectory, where it would have ended the episode, the model turns / prompt
tokens / latency after that point, and the grade of the truncated episode (emrgym replay
of the trajectory cut there) against the recorded grade: success, progress and every
node's verdict."""
import json, glob, os, subprocess, sys, tempfile
N = 4
args = sys.argv[1:]
WRITES = bool(args) and args[0] == '--writes'
if WRITES:
    args = args[1:]
PERIOD = 1
if args and args[0] == '--period':
    PERIOD = int(args[1])
    args = args[2:]
EMRGYM = args[0]  # the emrgym binary
runs = args[1:]


def write_key(name, arguments):
    """A write's identity: the tool and its arguments without what the server assigns."""
    if name not in ('fhir_create', 'fhir_update'):
        return None
    a = json.loads(json.dumps(arguments))
    r = a.get('resource') if isinstance(a, dict) else None
    if isinstance(r, dict):
        r.pop('meta', None)
        if name == 'fhir_create':
            r.pop('id', None)
    return json.dumps(a, sort_keys=True)

for run in runs:
    rec = {}
    for l in open(os.path.join(run, 'results.jsonl')):
        r = json.loads(l); rec[(r['instance'], r['trial'])] = r
    hit = saved_turns = saved_pt = saved_ms = all_ms = changed = 0
    ends = {}
    for f in sorted(glob.glob(os.path.join(run, 'trajectories', '*.jsonl'))):
        lines = [json.loads(x) for x in open(f)]
        all_ms += sum(l.get('latency_ms', 0) for l in lines if l.get('type') == 'model_reply')
        steps = []  # (line index of the result, key)
        call = None
        cut = None
        writes = {}
        for i, l in enumerate(lines):
            if l.get('type') == 'tool_call':
                call = (l['name'], json.dumps(l['arguments'], sort_keys=True))
                wkey = write_key(l['name'], l['arguments'])
            elif l.get('type') == 'tool_result':
                steps.append((i, (call, l.get('ok'), l.get('status'), json.dumps(l.get('content'), sort_keys=True))))
                if WRITES:
                    if wkey is not None:
                        writes[wkey] = writes.get(wkey, 0) + 1
                        if writes[wkey] >= N:
                            cut = i
                            break
                elif len(steps) >= N * PERIOD and all(
                    steps[-1 - j][1] == steps[-1 - j - k * PERIOD][1] for j in range(PERIOD) for k in range(1, N)
                ):
                    cut = i
                    break
        if cut is None:
            continue
        hit += 1
        after = [l for l in lines[cut + 1:] if l.get('type') == 'model_reply']
        saved_turns += len(after)
        saved_pt += sum(l.get('prompt_tokens', 0) for l in after)
        saved_ms += sum(l.get('latency_ms', 0) for l in after)
        endl = lines[-1]
        ends[endl.get('reason')] = ends.get(endl.get('reason'), 0) + 1
        kept = [l for l in lines[:cut + 1] if l.get('type') != 'end']
        kept.append({'type': 'end', 'reason': 'stuck', 'steps': len(steps), 'turns': sum(1 for l in kept if l.get('type') == 'model_reply')})
        with tempfile.NamedTemporaryFile('w', suffix='.jsonl', delete=False) as t:
            for l in kept:
                t.write(json.dumps(l) + '\n')
        out = json.loads(subprocess.run([EMRGYM, 'replay', '--json', t.name], capture_output=True, text=True, check=True).stdout)
        os.unlink(t.name)
        g = out[0]['now']['grade']
        h = lines[0]
        r = rec[(h['scenario']['instance'], h['trial'])]
        old = r.get('grade') or {}
        verdicts = lambda gr: [(n['path'], n['verdict']) for n in gr.get('nodes', [])]
        if (g['success'], g['progress'], verdicts(g)) != (old.get('success'), old.get('progress'), verdicts(old)):
            changed += 1
            print('  CHANGED', f, (old.get('success'), old.get('progress')), '->', (g['success'], g['progress']))
    n = len(glob.glob(os.path.join(run, 'trajectories', '*.jsonl')))
    print(f"{os.path.basename(run)}: {n} episodes, {hit} would end stuck (recorded ends {ends}); "
          f"turns after the cut {saved_turns}, prompt tokens evaluated after it {saved_pt}, "
          f"model time after it {saved_ms/1000:.0f} s of {all_ms/1000:.0f} s ({100*saved_ms/max(all_ms,1):.1f}%, "
          f"{all_ms/max(all_ms-saved_ms,1):.2f}x episodes per hour of model time); grades changed {changed}")
