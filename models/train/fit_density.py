"""Fits the density an unsteered continuation aims at (`steering::expected_notes_per_beat`).

Reads reports of `moodfader lab eval-faithfulness --training-split --per-piece ... -o REPORT.json` (their
`per_piece` notes per bar, heard and really following, as the Rust code counts them) and fits
log2(mean notes per bar of the next bars + 1) on the heard bars by least absolute deviation:
the mean (m), the mean of the last two (l) and the spread of the bars' own logarithms (s). Prints
the 5-fold cross-validated |log2| error per data set beside the heard density alone.

    python models/train/fit_density.py tr.json vg.json
"""
import json
import sys

import numpy as np


def features(heard):
    h = np.asarray(heard, float)
    logs = np.log2(h + 1.0)
    return [1.0, np.log2(h.mean() + 1.0), np.log2(h[-2:].mean() + 1.0), logs.std()]


def lad(x, y, rounds=60):
    """Least absolute deviation by iteratively reweighted least squares."""
    w = np.ones(len(y))
    for _ in range(rounds):
        sw = np.sqrt(w)[:, None]
        b = np.linalg.lstsq(x * sw, y * sw[:, 0], rcond=None)[0]
        w = 1.0 / np.maximum(np.abs(y - x @ b), 1e-3)
    return b


def main(paths):
    rows = []
    for p in paths:
        for piece in json.load(open(p))["per_piece"]:
            if len(piece["heard"]) == 4 and piece["next"]:
                rows.append((piece["name"].split("/")[0], features(piece["heard"]), np.log2(np.mean(piece["next"]) + 1.0)))
    sets = np.array([r[0] for r in rows])
    x = np.array([r[1] for r in rows])
    y = np.array([r[2] for r in rows])
    fold = np.random.default_rng(0).integers(0, 5, len(y))
    pred = np.zeros(len(y))
    for k in range(5):
        b = lad(x[fold != k], y[fold != k])
        pred[fold == k] = x[fold == k] @ b
    print(f"{len(y)} openings; coefficients (1, m, l, s): {np.round(lad(x, y), 3).tolist()}")
    for name in ["all"] + sorted(set(sets)):
        m = np.ones(len(y), bool) if name == "all" else sets == name
        print(f"  {name:8} cross-validated |log2| error {np.mean(np.abs(pred[m] - y[m])):.3f}, heard density alone {np.mean(np.abs(x[m, 1] - y[m])):.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
