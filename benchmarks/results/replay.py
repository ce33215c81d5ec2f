"""Replay the search offline on what the exhaustive rounds measured (features + p50 per round)."""
import json, statistics, sys, random, importlib
from pathlib import Path
sys.path.insert(0, '/work/main')
import edgepack.predict as P
import edgepack.search.strategy as S
from edgepack.predict import Observation, Predictor
from edgepack.search.candidate import Candidate, Status
from edgepack.search.space import CompressionPlan, Constraints

WORK = Path('/tmp/bench')
import os
VERBOSE = os.environ.get('V')
ORDER = sys.argv[1].split(',') if len(sys.argv) > 1 else None

def load(name):
    rounds = sorted(WORK.glob(f'exhaustive-{name}-*.jsonl'))
    if not rounds: return None
    cands, truth, ops = {}, {}, {}
    for i, f in enumerate(rounds):
        for line in f.read_text().splitlines():
            o = Observation.from_dict(json.loads(line)['observation'])
            key = (o.source, o.features.runtime)
            if o.kinds:
                if i == 0: ops.setdefault(key, []).append(o)
            else:
                cands[key] = o.features
                truth.setdefault(key, []).append(o.ms)
    return cands, truth, ops

def replay(names, seed=0, max_meas=12):
    rng = random.Random(seed)
    history = []
    rows = []
    for name in names:
        got = load(name)
        if got is None: continue
        feats, truth, ops = got
        med = {k: statistics.median(v) for k, v in truth.items()}
        pool = []
        for key, f in feats.items():
            plan = CompressionPlan(f.format, f.quantization or f.precision, f.prune_ratio, f.threads)
            c = Candidate(plan, f, f.weight_bytes / 1e6, accuracy_drop=0.0, status=Status.PREDICTED)
            c._key = key
            pool.append(c)
        src = 'tflite' if name in ('hand_landmark_lite','iris_landmark','face_landmark','selfie_segmentation_landscape','palm_detection_lite','pose_detection') else 'onnx'
        pred = Predictor(history=list(history))
        st = S.Strategy(pool, pred, Constraints(), max_measurements=max_meas, source_format=src)
        before = {}
        profiled = set()
        while batch := st.propose():
            c = batch[0]
            before[c._key] = pred.latency_ms(c.features)
            ms = rng.choice(truth[c._key])
            st.observe(c, ms)
            g = (c.plan.format.value, c.plan.precision.value)
            if g not in profiled and c._key in ops:
                profiled.add(g)
                # scale op shares to this measurement
                tot = sum(o.ms for o in ops[c._key]); 
                pred.observations.extend(Observation(o.features, o.ms * ms / tot if False else o.ms * ms / med[c._key], kinds=o.kinds, source=o.source) for o in ops[c._key])
                pred._fit = None
        for c in pool:
            if c._key not in before: before[c._key] = pred.latency_ms(c.features)
        if VERBOSE:
            for c in pool:
                print('   ', c.plan.label, 'truth %.3f before %.3f (%.2fx) %s' % (med[c._key], before[c._key], before[c._key]/med[c._key], 'M' if c.measured else ''))
        best = min(med.values())
        chosen = st.best()
        ratio = med[chosen._key] / best
        within = sum(abs(before[k] - med[k]) / med[k] <= 0.10 for k in med) / len(med)
        errs = sorted(abs(before[k] - med[k]) / med[k] for k in med)
        measured = sum(c.measured for c in pool)
        rows.append((name, len(pool), measured, ratio, within, statistics.median(errs)))
        history += [o for o in pred.observations]
    return rows

if __name__ == '__main__':
    names = ORDER or [p.name.split('-')[1] for p in sorted(WORK.glob('exhaustive-*-1.jsonl'))]
    rows = replay(names)
    for r in rows: print(f"{r[0]:32s} {r[1]:3d} {r[2]:3d} {r[3]:6.3f} {r[4]:5.0%} {r[5]:5.0%}")
    print('ok<=1.05:', sum(r[3] <= 1.05 for r in rows), 'third:', sum(r[2] <= r[1]/3 for r in rows), 'within10 mean: %.0f%%' % (100*statistics.mean(r[4] for r in rows)))
