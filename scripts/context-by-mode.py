"""Usage: python3 scripts/context-by-mode.py RUN_A RUN_B

How long the conversations of two runs of the same instances were, paired by instance:
for each episode, the characters the model had read when it wrote each reply (every
message sent to it so far and its own earlier replies, as the trajectory records them;
the system prompt and the tool schemas, which are the same in every mode, are left out),
its mean over the episode's replies and its value at the last reply; then how often B's
conversation was longer than A's, over all instances and over those where B's progress
beat A's. It answers whether a mode that scores better did so with a shorter context.
Characters, not tokens: the recorded prompt_tokens count only what the backend evaluated
(a cached prefix is not counted), so they do not measure the context. Trials are paired
by (instance, trial)."""
import glob
import json
import os
import statistics as st
import sys


def conversations(run):
    """(instance, trial) -> the context length, in characters, at each model reply."""
    out = {}
    for f in sorted(glob.glob(os.path.join(run, 'trajectories', '*.jsonl'))):
        key = None
        ctx, at_reply = 0, []
        with open(f) as fh:
            for line in fh:
                r = json.loads(line)
                if r.get('format') == 'emrgym.trajectory':
                    key = (r['scenario']['instance'], r['trial'])
                elif r.get('type') == 'model_request':
                    ctx += sum(len(json.dumps(m.get('content', ''))) for m in r['sent'])
                    at_reply.append(ctx)
                elif r.get('type') == 'model_reply':
                    ctx += len(json.dumps(r.get('tool_calls') or r.get('content') or ''))
        if key is not None:
            out[key] = at_reply
    return out


def progress(run):
    out = {}
    with open(os.path.join(run, 'results.jsonl')) as fh:
        for line in fh:
            r = json.loads(line)
            if r.get('grade') is not None:
                out[(r['instance'], r['trial'])] = r['grade']['progress']
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a_run, b_run = sys.argv[1:]
    A, B = conversations(a_run), conversations(b_run)
    PA, PB = progress(a_run), progress(b_run)
    keys = sorted(k for k in set(A) & set(B) if A[k] and B[k] and k in PA and k in PB)
    if not keys:
        sys.exit('no episode of the same instance and trial with a model reply in both runs')
    a_name, b_name = os.path.basename(a_run.rstrip('/')), os.path.basename(b_run.rstrip('/'))
    print(f'{len(keys)} paired episodes; A = {a_name}, B = {b_name}')
    for name, D in (('A', A), ('B', B)):
        print(f'{name}: replies median {st.median(len(D[k]) for k in keys)}, mean {st.mean(len(D[k]) for k in keys):.1f}; '
              f'characters read per reply (episode mean) median {st.median(st.mean(D[k]) for k in keys):.0f}; '
              f'at the last reply median {st.median(D[k][-1] for k in keys):.0f}')
    for label, f in (('mean characters per reply', lambda D, k: st.mean(D[k])),
                     ('characters at the last reply', lambda D, k: D[k][-1]),
                     ('replies', lambda D, k: len(D[k]))):
        d = [f(B, k) - f(A, k) for k in keys]
        print(f'B - A, {label}: median {st.median(d):+.0f}; B longer in {sum(x > 0 for x in d)}, '
              f'shorter in {sum(x < 0 for x in d)}, equal in {sum(x == 0 for x in d)}')
    better = [k for k in keys if PB[k] > PA[k]]
    print(f'B progress above A in {len(better)} episodes; of them B read more characters per reply in '
          f'{sum(st.mean(B[k]) > st.mean(A[k]) for k in better)} and more at the last reply in '
          f'{sum(B[k][-1] > A[k][-1] for k in better)}')


if __name__ == '__main__':
    main()
