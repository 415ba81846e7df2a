#!/usr/bin/env python3
"""A separate emotion judge for the continuation's emotion bridge.

The bridge is fitted so that the project's own estimator reads its target, so that estimator
cannot be its judge. This one shares no code with it: it reads MIDI files with mido, computes its
own features (none of the Rust feature extractor's; Aarden-Essen key profiles instead of
Krumhansl-Kessler; scale degrees relative to the tonic it finds), and is a logistic regression per
axis trained on 8-second windows of EMOPIA clips (labelled by the clip's quadrant) and VGMIDI
pieces (labelled by the sign of the piece's mean rating). Its own accuracy is measured by
cross-validation grouped by song and piece, with the regularisation chosen inside the folds.

It then judges the continuations of the emotion grid that
`moodfader lab eval-continuation --dump-emotion DIR` wrote (DIR/trials.json and one MIDI file
per trial): is each heard in its target's quadrant?

Usage: python judge.py --data DATA --trials DIR [--out judge.json] [--seed N]

Thread: main (an offline script, run by `cargo xtask eval continuation` and the `train` tasks)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import mido
import numpy as np

WINDOW_S = 8.0  # about four bars at 120 BPM: what the emotion grid's continuations last
MIN_NOTES = 8  # a window with fewer notes is not judged (or trained on)
ONSET_GROUP_S = 0.03
N_FOLDS = 5
N_INNER = 4
L2_GRID = (0.01, 0.1, 1.0, 10.0)
# Aarden-Essen key profiles (folk-song melodies), not the Krumhansl-Kessler ones the project uses.
AE_MAJOR = np.array([17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062, 0.145624, 8.15494, 0.232998, 4.95122])
AE_MINOR = np.array([18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161, 4.56621, 1.93186, 7.37619, 1.75623])
FEATURES = [
    "onsets_per_s", "notes_per_s", "velocity", "velocity_std", "pitch", "pitch_std", "log_duration",
    "notes_per_onset", "mode_ae", "key_fit", "deg_m3", "deg_M3", "deg_m6", "deg_M6", "deg_m7", "deg_M7",
    "deg_tritone", "pc_entropy", "top_step", "top_up_share", "low_pitch",
]


def fail(msg: str) -> None:
    print(f"judge: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_notes(path: str) -> np.ndarray:
    """[N, 4] float: onset s, duration s, pitch, velocity (drum channel 10 left out), by onset."""
    mid = mido.MidiFile(path)
    notes, open_ = [], {}
    t = 0.0
    for msg in mid:  # merged tracks, delta times in seconds (tempo map applied by mido)
        t += msg.time
        if msg.type not in ("note_on", "note_off") or msg.channel == 9:
            continue
        key = (msg.channel, msg.note)
        if key in open_:
            on, vel = open_.pop(key)
            notes.append((on, max(t - on, 0.0), msg.note, vel))
        if msg.type == "note_on" and msg.velocity > 0:
            open_[key] = (t, msg.velocity)
    for (_, pitch), (on, vel) in open_.items():
        notes.append((on, max(t - on, 0.05), pitch, vel))
    arr = np.asarray(sorted(notes), dtype=np.float64).reshape(-1, 4)
    return arr


def features(n: np.ndarray, span_s: float) -> np.ndarray | None:
    """The judge's features of the notes `n` (onset-relative times) over `span_s` seconds."""
    if len(n) < MIN_NOTES or span_s <= 0:
        return None
    on, dur, pitch, vel = n[:, 0], np.clip(n[:, 1], 0.01, 8.0), n[:, 2], n[:, 3]
    groups = np.concatenate([[True], np.diff(on) > ONSET_GROUP_S])
    n_onsets = int(groups.sum())
    hist = np.zeros(12)
    np.add.at(hist, pitch.astype(int) % 12, dur)
    hist = hist / hist.sum()
    corr = lambda prof, k: float(np.corrcoef(hist, np.roll(prof, k))[0, 1])
    majors = [corr(AE_MAJOR, k) for k in range(12)]
    minors = [corr(AE_MINOR, k) for k in range(12)]
    best_major, best_minor = max(majors), max(minors)
    tonic = int(np.argmax(majors)) if best_major >= best_minor else int(np.argmax(minors))
    deg = np.roll(hist, -tonic)  # share of each scale degree above the tonic
    # The top line: the highest pitch of each onset group.
    starts = np.flatnonzero(groups)
    ends = np.append(starts[1:], len(n))
    top = np.array([pitch[s:e].max() for s, e in zip(starts, ends)])
    steps = np.diff(top)
    low = np.array([pitch[s:e].min() for s, e in zip(starts, ends)])
    ent = -float(np.sum(hist[hist > 0] * np.log2(hist[hist > 0])))
    return np.array([
        n_onsets / span_s, len(n) / span_s, vel.mean() / 127, vel.std() / 127, pitch.mean(), pitch.std(),
        math.log(float(np.mean(dur))), len(n) / n_onsets, best_major - best_minor, max(best_major, best_minor),
        deg[3], deg[4], deg[8], deg[9], deg[10], deg[11], deg[6], ent,
        float(np.mean(np.abs(steps))) if len(steps) else 0.0, float(np.mean(steps > 0)) if len(steps) else 0.5,
        low.mean(),
    ])


def windows(n: np.ndarray) -> list[np.ndarray]:
    """Features of consecutive WINDOW_S windows of a piece (the last partial one left out)."""
    if len(n) == 0:
        return []
    out, start, end = [], n[0, 0], n[:, 0].max()
    while start + WINDOW_S <= end + 1e-9:
        m = (n[:, 0] >= start) & (n[:, 0] < start + WINDOW_S)
        w = n[m].copy()
        w[:, 0] -= start
        f = features(w, WINDOW_S)
        if f is not None:
            out.append(f)
        start += WINDOW_S
    return out


def load_training(data: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of EMOPIA clips and VGMIDI pieces: features, (valence, arousal) signs, group."""
    xs, ys, gs = [], [], []
    with open(os.path.join(data, "emopia", "labels.json"), encoding="utf-8") as fh:
        for e in json.load(fh):
            for f in windows(read_notes(os.path.join(data, "emopia", e["midi"]))):
                xs.append(f)
                ys.append((e["valence_sign"], e["arousal_sign"]))
                gs.append("emopia/" + e["song"])
    with open(os.path.join(data, "vgmidi", "labelled", "labels.json"), encoding="utf-8") as fh:
        for e in json.load(fh):
            v, a = float(np.mean(e["valence"])), float(np.mean(e["arousal"]))
            for f in windows(read_notes(os.path.join(data, "vgmidi", "labelled", e["midi"]))):
                xs.append(f)
                ys.append((1 if v >= 0 else -1, 1 if a >= 0 else -1))
                gs.append("vgmidi/" + e["midi"])
    return np.asarray(xs), np.asarray(ys, dtype=np.float64), np.asarray(gs)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised L2 logistic regression per column of y (signs +-1), by Newton's method.
    Returns (mean, std, weights [F + 1, 2])."""
    mu, sd = x.mean(0), x.std(0)
    sd[sd < 1e-9] = 1.0
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.zeros((z.shape[1], y.shape[1]))
    reg = l2 * np.eye(z.shape[1])
    reg[-1, -1] = 0.0
    for j in range(y.shape[1]):
        t = (y[:, j] > 0).astype(float)
        for _ in range(steps):
            p = 1 / (1 + np.exp(-z @ w[:, j]))
            g = z.T @ (p - t) / len(z) + reg @ w[:, j] / len(z)
            h = (z * (p * (1 - p))[:, None]).T @ z / len(z) + reg / len(z)
            dw = np.linalg.solve(h, g)
            w[:, j] -= dw
            if np.abs(dw).max() < 1e-8:
                break
    return mu, sd, w


def decide(model, x: np.ndarray) -> np.ndarray:
    mu, sd, w = model
    return np.where(np.c_[(x - mu) / sd, np.ones(len(x))] @ w >= 0, 1.0, -1.0)


def folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    uniq = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold = {uniq[i]: n % k for n, i in enumerate(order)}
    return np.asarray([fold[g] for g in groups])


def choose_l2(x, y, g, seed) -> float:
    k = folds(g, N_INNER, seed)
    best, best_acc = L2_GRID[0], -1.0
    for l2 in L2_GRID:
        hits = 0
        for f in range(N_INNER):
            m = fit_logistic(x[k != f], y[k != f], l2)
            hits += int((decide(m, x[k == f]) == y[k == f]).all(axis=1).sum())
        if hits / len(x) > best_acc:
            best, best_acc = l2, hits / len(x)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="the data sets' folder (EMOPIA and VGMIDI labelled)")
    ap.add_argument("--trials", required=True, help="folder written by eval-continuation --dump-emotion")
    ap.add_argument("--out", help="write the report (JSON) here")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    index = os.path.join(args.trials, "trials.json")
    if not os.path.isfile(index):
        fail(f"{index} not found (run `moodfader lab eval-continuation --dump-emotion {args.trials}` first)")
    for need in ("emopia/labels.json", "vgmidi/labelled/labels.json"):
        if not os.path.isfile(os.path.join(args.data, need)):
            fail(f"{os.path.join(args.data, need)} not found")

    x, y, g = load_training(args.data)
    print(f"judge: {len(x)} windows of {WINDOW_S:.0f} s from {len(set(g))} songs and pieces, {len(FEATURES)} features")

    # The judge's own accuracy: grouped CV, the L2 weight chosen inside each training fold.
    k = folds(g, N_FOLDS, args.seed)
    pred = np.zeros_like(y)
    for f in range(N_FOLDS):
        tr = k != f
        l2 = choose_l2(x[tr], y[tr], g[tr], args.seed + f + 1)
        pred[~tr] = decide(fit_logistic(x[tr], y[tr], l2), x[~tr])
    ok = pred == y
    emo = np.char.startswith(g.astype(str), "emopia/")
    own = {
        "protocol": f"{N_FOLDS}-fold cross-validation grouped by song (EMOPIA) and piece (VGMIDI), L2 weight chosen by {N_INNER} inner folds; per {WINDOW_S:.0f}-second window",
        "windows": int(len(x)),
        "valence_sign_accuracy": round(float(ok[:, 0].mean()), 4),
        "arousal_sign_accuracy": round(float(ok[:, 1].mean()), 4),
        "quadrant_accuracy": round(float(ok.all(axis=1).mean()), 4),
        "quadrant_accuracy_emopia": round(float(ok[emo].all(axis=1).mean()), 4),
        "quadrant_accuracy_vgmidi": round(float(ok[~emo].all(axis=1).mean()), 4),
    }
    print(f"judge's own accuracy (held-out windows): quadrant {own['quadrant_accuracy']:.3f} (valence {own['valence_sign_accuracy']:.3f}, arousal {own['arousal_sign_accuracy']:.3f}; EMOPIA {own['quadrant_accuracy_emopia']:.3f}, VGMIDI {own['quadrant_accuracy_vgmidi']:.3f})")

    judge = fit_logistic(x, y, choose_l2(x, y, g, args.seed))
    with open(index, encoding="utf-8") as fh:
        trials = json.load(fh)
    per_set: dict[str, list[int]] = {}
    per_target: dict[str, list[int]] = {}
    agree, unjudged = [], 0
    for t in trials:
        n = read_notes(os.path.join(args.trials, t["file"]))
        span = t["bars"] * WINDOW_S / 4 if len(n) == 0 else max(float(n[:, 0].max() + 0.01), WINDOW_S / 2)
        f = features(n, span)
        if f is None:
            unjudged += 1
            hit = 0
        else:
            s = decide(judge, f[None, :])[0]
            want = np.where(np.asarray(t["target"]) >= 0, 1.0, -1.0)
            hit = int((s == want).all())
            est = np.where(np.asarray(t["estimator"]) >= 0, 1.0, -1.0)
            agree.append(int((s == est).all()))
        per_set.setdefault(t["set"], []).append(hit)
        per_target.setdefault(f"V {t['target'][0]:+.1f} A {t['target'][1]:+.1f}", []).append(hit)
    report = {
        "judge": own,
        "features": FEATURES,
        "trials": len(trials),
        "unjudged": unjudged,
        "quadrant_accuracy": round(float(np.mean([h for v in per_set.values() for h in v])), 4),
        "quadrant_accuracy_by_set": {k: {"hits": int(sum(v)), "trials": len(v), "accuracy": round(float(np.mean(v)), 4)} for k, v in per_set.items()},
        "quadrant_accuracy_by_target": {k: round(float(np.mean(v)), 4) for k, v in per_target.items()},
        "agreement_with_estimator": round(float(np.mean(agree)), 4) if agree else None,
    }
    print(f"continuations in the target quadrant by this judge: {report['quadrant_accuracy']:.3f} of {len(trials)} "
          + ", ".join(f"{k} {v['hits']}/{v['trials']}" for k, v in report["quadrant_accuracy_by_set"].items())
          + f"; agrees with the estimator on {report['agreement_with_estimator']}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
