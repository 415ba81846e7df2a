#!/usr/bin/env python3
"""Train Moodfader's per-bar valence/arousal model and export it to ONNX.

Input: the per-bar feature CSV written by `moodfader lab export-features` (see README.md for the
contract). Output, in --out: `emotion_va.onnx` and its manifest `emotion_va.json`.

What it does, in order:
  1. Loads the CSV, discovers the feature columns by their `f_` prefix (in column order) and builds
     each bar's context vector [f(t), f(t-1), mean(f(t-3..=t))] (see `context_vectors`).
  2. Splits off a fixed holdout: the sorted piece ids, every 5th starting with the first.
  3. 5-fold cross-validation by piece (seeded) on the other pieces, for each candidate model;
     picks the candidate with the best mean pooled CCC over valence and arousal.
  4. Trains the picked candidate on all non-holdout pieces; scores it on the holdout pieces,
     which neither the model nor the choice of model ever saw.
  5. Exports that model (standardisation and clipping baked in, raw features in) to ONNX,
     checks onnxruntime against torch on the holdout inputs (fails loudly beyond 1e-4),
     and writes the manifest.

Usage: python train_emotion.py --features CSV --out DIR [--seed N] [--epochs N]

Thread: main (an offline script, run by `cargo xtask train emotion`)
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

MODEL_NAME = "emotion_va"
MODEL_VERSION = "1"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # the IR version that goes with opset 17; readable by any recent runtime
INPUT_NAME = "features"
OUTPUT_NAME = "va"
CONTEXT_MEAN_BARS = 4  # bars in the context mean: this one and the three before
LONG_MEAN_BARS = 32  # memory of the long mean (plain mean over the first 32 bars with notes, then EMA)
CONTEXT_COPIES = 4  # f(t), f(t-1), the 4-bar mean, the long mean
CLIP_Z = 5.0  # standardised inputs are clipped to [-CLIP_Z, CLIP_Z] (in training and in the graph)
N_FOLDS = 5
HOLDOUT_EVERY = 5
PARITY_ATOL = 1e-4
LABELS = ("valence", "arousal")

CONTEXT_RULE = (
    "For bar t of a piece (bars 0-based, in order, every bar present), with f(k) the F raw features "
    "of bar k: x(t) = [f(t), f(t-1), (f(t-3) + f(t-2) + f(t-1) + f(t)) / 4, L(t)], length 4F, where any "
    "f(k) with k < 0 is replaced by f(t) itself (so x(0) = [f(0), f(0), f(0), f(0)] and "
    "x(1) = [f(1), f(0), (f(1) + f(1) + f(0) + f(1)) / 4, L(1)]). The mean always divides by 4. "
    "L(t), the long mean, folds in bars 0..=t that have notes (feature 'silent' < 0.5) in order: "
    "with n the number folded in so far, L <- L + max(1/n, 1/32) * (f - L) (a plain mean over the "
    "first 32, then an exponential mean); L(t) = f(t) when none has notes. A bar whose novelty "
    "mean over the section features of |f - L| / scale (threshold, scale and features from the "
    "exporter's sidecar 'long_mean') exceeds the threshold starts L again (n = 0) before it is folded in. "
    "Raw, unnormalised features: standardisation and clipping are inside the model."
)

# Candidate models: name -> (hidden units or 0 for linear, AdamW weight decay, learning rate).
CANDIDATES = {
    "linear": (0, 1e-4, 1e-2),
    "mlp16": (16, 1e-3, 3e-3),
    "mlp32": (32, 1e-3, 3e-3),
}
BATCH_SIZE = 128


# ----------------------------------------------------------------------------------------- data


@dataclass
class Dataset:
    feature_names: list[str]  # without the `f_` prefix
    pieces: list[str]  # one per row
    bars: np.ndarray  # int, one per row
    x: np.ndarray  # [N, 4F] float32 context vectors (raw)
    y: np.ndarray  # [N, 2] float32 (valence, arousal)
    feature_spec_version: object


def fail(msg: str) -> None:
    print(f"train_emotion: error: {msg}", file=sys.stderr)
    sys.exit(1)


@dataclass(frozen=True)
class LongRule:
    """The long mean's section test, as the Rust exporter wrote it (features.rs LongMean)."""

    threshold: float = math.inf
    scale: np.ndarray | None = None
    use: np.ndarray | None = None


def context_vectors(feats: np.ndarray, silent_col: int, rule: LongRule = LongRule()) -> np.ndarray:
    """[B, F] per-bar features of one piece (bar order) -> [B, 4F] context vectors (CONTEXT_RULE)."""
    b = feats.shape[0]
    idx = np.arange(b)

    def prev(k: int) -> np.ndarray:
        # bar t-k, or bar t itself where t-k < 0
        return feats[np.where(idx >= k, idx - k, idx)]

    mean = sum(prev(k) for k in range(CONTEXT_MEAN_BARS)) / CONTEXT_MEAN_BARS
    long = np.empty_like(feats)
    acc, n = np.zeros(feats.shape[1]), 0
    for t in range(b):
        if feats[t, silent_col] < 0.5:
            if n > 0 and rule.use is not None:
                # float32 like the Rust side, so the two agree on borderline bars
                d = np.abs(feats[t].astype(np.float32) - acc.astype(np.float32))[rule.use] / rule.scale[rule.use]
                if float(np.mean(d, dtype=np.float32)) > rule.threshold:
                    n = 0
            n += 1
            acc = acc + max(1.0 / n, 1.0 / LONG_MEAN_BARS) * (feats[t] - acc)
        long[t] = acc if n > 0 else feats[t]
    return np.concatenate([feats, prev(1), mean, long], axis=1)


def load_features(path: str) -> Dataset:
    if not os.path.isfile(path):
        fail(f"feature CSV {path!r} not found (run `moodfader lab export-features` first)")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            fail(f"{path}: empty file")
        rows = [r for r in reader if r]

    col = {name: i for i, name in enumerate(header)}
    for needed in ("piece", "bar", "valence", "arousal"):
        if needed not in col:
            fail(f"{path}: missing column {needed!r}")
    fcols = [i for i, name in enumerate(header) if name.startswith("f_")]
    if not fcols:
        fail(f"{path}: no feature columns (names starting with 'f_')")
    names = [header[i][2:] for i in fcols]

    by_piece: dict[str, list[tuple[int, list[float], list[float]]]] = {}
    for line_no, r in enumerate(rows, start=2):
        if len(r) != len(header):
            fail(f"{path}:{line_no}: {len(r)} fields, header has {len(header)}")
        try:
            bar = int(r[col["bar"]])
            f = [float(r[i]) for i in fcols]
            y = [float(r[col["valence"]]), float(r[col["arousal"]])]
        except ValueError as e:
            fail(f"{path}:{line_no}: {e}")
        if not all(math.isfinite(v) for v in f + y):
            fail(f"{path}:{line_no}: non-finite value")
        by_piece.setdefault(r[col["piece"]], []).append((bar, f, y))

    names = [header[i][2:] for i in fcols]
    if "silent" not in names:
        fail(f"{path}: no f_silent column (the long mean needs it)")
    silent_col = names.index("silent")

    spec_version: object = "unknown"
    rule = LongRule()
    sidecar = path + ".json"
    if os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8") as fh:
            side = json.load(fh)
        spec_version = side.get("feature_spec_version", "unknown")
        side_names = side.get("features")
        if side_names is not None and list(side_names) != names:
            fail(f"{sidecar}: feature names {side_names} differ from the CSV's {names}")
        lm = side.get("long_mean")
        if lm is not None:
            if int(lm["bars"]) != LONG_MEAN_BARS:
                fail(f"{sidecar}: long mean of {lm['bars']} bars, this script folds {LONG_MEAN_BARS}")
            rule = LongRule(
                threshold=float(lm["novelty_threshold"]),
                scale=np.asarray(lm["novelty_scale"], dtype=np.float32),
                use=np.asarray(lm["novelty_features"], dtype=bool),
            )
    pieces, bars, xs, ys = [], [], [], []
    for piece in sorted(by_piece):
        items = sorted(by_piece[piece], key=lambda it: it[0])
        got = [it[0] for it in items]
        if got != list(range(len(items))):
            fail(f"{path}: piece {piece!r}: bars must be 0..n-1 with none missing or repeated")
        feats = np.asarray([it[1] for it in items], dtype=np.float64)
        xs.append(context_vectors(feats, silent_col, rule))
        ys.append(np.asarray([it[2] for it in items], dtype=np.float64))
        pieces += [piece] * len(items)
        bars += got

    return Dataset(
        feature_names=names,
        pieces=pieces,
        bars=np.asarray(bars),
        x=np.concatenate(xs).astype(np.float32),
        y=np.clip(np.concatenate(ys), -1.0, 1.0).astype(np.float32),
        feature_spec_version=spec_version,
    )


# ---------------------------------------------------------------------------------------- model


class EmotionNet(nn.Module):
    """Raw context vector -> (valence, arousal) in [-1, 1]; standardisation is part of the model."""

    def __init__(self, in_dim: int, hidden: int, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.tensor(1.0 / std, dtype=torch.float32))
        self.hidden = hidden
        if hidden:
            self.fc1 = nn.Linear(in_dim, hidden)
            self.fc2 = nn.Linear(hidden, 2)
        else:
            self.fc2 = nn.Linear(in_dim, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.clamp((x - self.mean) * self.inv_std, -CLIP_Z, CLIP_Z)
        if self.hidden:
            z = torch.tanh(self.fc1(z))
        return torch.tanh(self.fc2(z))


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, std)  # a constant column passes through centred
    return mean.astype(np.float32), std.astype(np.float32)


def train_model(x: np.ndarray, y: np.ndarray, cand: str, epochs: int, seed: int) -> EmotionNet:
    hidden, wd, lr = CANDIDATES[cand]
    torch.manual_seed(seed)
    mean, std = standardiser(x)
    model = EmotionNet(x.shape[1], hidden, mean, std)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    n = xt.shape[0]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, BATCH_SIZE):
            b = perm[i : i + BATCH_SIZE]
            loss = nn.functional.mse_loss(model(xt[b]), yt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    return model


def predict(model: EmotionNet, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# -------------------------------------------------------------------------------------- metrics


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else float("nan")


def ccc(pred: np.ndarray, true: np.ndarray) -> float:
    mp, mt = pred.mean(), true.mean()
    cov = ((pred - mp) * (true - mt)).mean()
    den = pred.var() + true.var() + (mp - mt) ** 2
    return float(2 * cov / den) if den > 0 else float("nan")


def metrics(pred: np.ndarray, true: np.ndarray, pieces: np.ndarray) -> dict:
    pred = pred.astype(np.float64)
    true = true.astype(np.float64)
    out: dict = {"n_pieces": int(len(np.unique(pieces))), "n_bars": int(len(pieces))}
    uniq = np.unique(pieces)
    masks = [pieces == p for p in uniq]
    sign_ok = np.zeros((len(uniq), 2), dtype=bool)
    for j, lab in enumerate(LABELS):
        out[f"{lab}_pearson"] = pearson(pred[:, j], true[:, j])
        out[f"{lab}_ccc"] = ccc(pred[:, j], true[:, j])
        out[f"{lab}_mae"] = float(np.abs(pred[:, j] - true[:, j]).mean())
        within = []
        for k, m in enumerate(masks):
            sign_ok[k, j] = (pred[m, j].mean() >= 0) == (true[m, j].mean() >= 0)
            if m.sum() >= 3 and true[m, j].std() > 1e-9 and pred[m, j].std() > 1e-9:
                within.append(pearson(pred[m, j], true[m, j]))
        out[f"{lab}_within_piece_median_r"] = float(np.median(within)) if within else float("nan")
        out[f"{lab}_sign_accuracy"] = float(sign_ok[:, j].mean())
    out["quadrant_accuracy"] = float(sign_ok.all(axis=1).mean())
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def score(m: dict) -> float:
    return (m["valence_ccc"] + m["arousal_ccc"]) / 2


# ----------------------------------------------------------------------------------------- onnx


def export_onnx(model: EmotionNet, path: str) -> None:
    """Writes the model as a plain ONNX graph: Sub, Mul, Clip, Gemm, Tanh (dynamic batch N)."""
    in_dim = model.mean.shape[0]

    def init(name: str, t: torch.Tensor) -> onnx.TensorProto:
        return numpy_helper.from_array(t.detach().numpy().astype(np.float32), name)

    inits = [
        init("mean", model.mean),
        init("inv_std", model.inv_std),
        numpy_helper.from_array(np.array(-CLIP_Z, dtype=np.float32), "clip_lo"),
        numpy_helper.from_array(np.array(CLIP_Z, dtype=np.float32), "clip_hi"),
    ]
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "mean"], ["centred"]),
        helper.make_node("Mul", ["centred", "inv_std"], ["z_raw"]),
        helper.make_node("Clip", ["z_raw", "clip_lo", "clip_hi"], ["z"]),
    ]
    h = "z"
    if model.hidden:
        inits += [init("fc1_w", model.fc1.weight), init("fc1_b", model.fc1.bias)]
        nodes += [
            helper.make_node("Gemm", [h, "fc1_w", "fc1_b"], ["h1_pre"], transB=1),
            helper.make_node("Tanh", ["h1_pre"], ["h1"]),
        ]
        h = "h1"
    inits += [init("fc2_w", model.fc2.weight), init("fc2_b", model.fc2.bias)]
    nodes += [
        helper.make_node("Gemm", [h, "fc2_w", "fc2_b"], ["va_pre"], transB=1),
        helper.make_node("Tanh", ["va_pre"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "moodfader_emotion_va",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", in_dim])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 2])],
        initializer=inits,
    )
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="moodfader-train",
        producer_version=MODEL_VERSION,
        doc_string="Per-bar valence/arousal from raw context vectors. " + CONTEXT_RULE,
    )
    m.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    with open(path, "wb") as fh:
        fh.write(m.SerializeToString())


def parity_check(onnx_path: str, model: EmotionNet, x: np.ndarray) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.astype(np.float32)})[0]
    want = predict(model, x)
    if got.shape != want.shape:
        raise SystemExit(f"PARITY FAILED: onnxruntime shape {got.shape} != torch {want.shape}")
    diff = float(np.abs(got - want).max()) if len(x) else 0.0
    if not diff <= PARITY_ATOL:
        raise SystemExit(f"PARITY FAILED: max |onnxruntime - torch| = {diff:.3g} > {PARITY_ATOL}")
    return diff


# ------------------------------------------------------------------------------------------ main


def print_table(rows: list[tuple[str, dict]]) -> None:
    cols = [
        ("pieces", "n_pieces", "{:d}"),
        ("bars", "n_bars", "{:d}"),
        ("V r", "valence_pearson", "{:.3f}"),
        ("V ccc", "valence_ccc", "{:.3f}"),
        ("V wp-r", "valence_within_piece_median_r", "{:.3f}"),
        ("A r", "arousal_pearson", "{:.3f}"),
        ("A ccc", "arousal_ccc", "{:.3f}"),
        ("A wp-r", "arousal_within_piece_median_r", "{:.3f}"),
        ("quad", "quadrant_accuracy", "{:.3f}"),
    ]
    w0 = max(len(r[0]) for r in rows)
    print(f"{'':{w0}}  " + "  ".join(f"{c[0]:>7}" for c in cols))
    for name, m in rows:
        print(f"{name:{w0}}  " + "  ".join(f"{c[2].format(m[c[1]]):>7}" for c in cols))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", required=True, help="per-bar feature CSV from export-features")
    ap.add_argument("--out", required=True, help="directory for emotion_va.onnx and emotion_va.json")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    if args.epochs < 1:
        fail("--epochs must be at least 1")

    t0 = time.time()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # tiny model: one thread is fast and bit-reproducible everywhere
    np.random.seed(args.seed)

    ds = load_features(args.features)
    pieces = np.asarray(ds.pieces)
    uniq = sorted(set(ds.pieces))
    n_feat = len(ds.feature_names)
    if len(uniq) < 2 * N_FOLDS:
        fail(f"need at least {2 * N_FOLDS} pieces, got {len(uniq)}")
    print(
        f"data: {len(uniq)} pieces, {len(pieces)} bars, {n_feat} features "
        f"(spec {ds.feature_spec_version}), input size {CONTEXT_COPIES * n_feat}"
    )

    holdout = uniq[::HOLDOUT_EVERY]
    dev = [p for p in uniq if p not in set(holdout)]
    is_hold = np.isin(pieces, holdout)
    xd, yd, pd = ds.x[~is_hold], ds.y[~is_hold], pieces[~is_hold]

    # 5-fold CV by piece over the development (non-holdout) pieces.
    order = np.random.default_rng(args.seed).permutation(len(dev))
    fold_of = {dev[i]: k % N_FOLDS for k, i in enumerate(order)}
    fold = np.asarray([fold_of[p] for p in pd])
    cv: dict[str, dict] = {}
    for cand in CANDIDATES:
        pred = np.zeros_like(yd)
        for k in range(N_FOLDS):
            tr, te = fold != k, fold == k
            model = train_model(xd[tr], yd[tr], cand, args.epochs, args.seed + k)
            pred[te] = predict(model, xd[te])
        cv[cand] = metrics(pred, yd, pd)
        print(f"  cv {cand:7s} mean CCC {score(cv[cand]):.3f}  ({time.time() - t0:.1f}s)")
    best = max(CANDIDATES, key=lambda c: (score(cv[c]), -list(CANDIDATES).index(c)))

    # Final model: all development pieces; scored on the untouched holdout.
    final = train_model(xd, yd, best, args.epochs, args.seed)
    xh, yh, ph = ds.x[is_hold], ds.y[is_hold], pieces[is_hold]
    hold = metrics(predict(final, xh), yh, ph)

    print()
    print_table([(f"cv5 {c}" + (" *" if c == best else ""), cv[c]) for c in CANDIDATES] + [("holdout", hold)])

    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, f"{MODEL_NAME}.onnx")
    export_onnx(final, onnx_path)
    diff = parity_check(onnx_path, final, xh)
    print(f"\nparity: onnxruntime vs torch on {len(xh)} holdout bars, max |diff| = {diff:.2e} (<= {PARITY_ATOL})")

    with open(onnx_path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    # A few raw inputs with the expected outputs, so a loader test can check its runtime wiring.
    sel = np.linspace(0, len(xh) - 1, num=min(3, len(xh))).astype(int)
    manifest = {
        "name": MODEL_NAME,
        "version": MODEL_VERSION,
        "feature_spec_version": ds.feature_spec_version,
        "features": ds.feature_names,
        "context": CONTEXT_RULE,
        "context_mean_bars": CONTEXT_MEAN_BARS,
        "inputs": [{"name": INPUT_NAME, "shape": [-1, CONTEXT_COPIES * n_feat], "dtype": "float32"}],
        "outputs": [{"name": OUTPUT_NAME, "shape": [-1, 2], "dtype": "float32", "columns": list(LABELS)}],
        "opset": ONNX_OPSET,
        "architecture": best
        + (f": Standardise+Clip(+-{CLIP_Z}) -> Linear({CONTEXT_COPIES * n_feat},{CANDIDATES[best][0]}) -> Tanh -> Linear(,2) -> Tanh"
           if CANDIDATES[best][0] else f": Standardise+Clip(+-{CLIP_Z}) -> Linear({CONTEXT_COPIES * n_feat},2) -> Tanh"),
        "training_data": f"VGMIDI labelled ({len(uniq)} pieces, {len(pieces)} bars)",
        "trained_on": f"{len(dev)} non-holdout pieces, {int((~is_hold).sum())} bars",
        "holdout_rule": f"sorted piece ids, every {HOLDOUT_EVERY}th starting with the first",
        "holdout_pieces": holdout,
        "metrics": {
            "cv5": {"pieces": "non-holdout", "selected": best, "seed": args.seed, **cv[best],
                    "candidates": {c: cv[c] for c in CANDIDATES}},
            "holdout": hold,
        },
        "selftest": {
            "atol": PARITY_ATOL,
            "inputs": [[float(v) for v in xh[i]] for i in sel],
            "outputs": [[float(v) for v in row] for row in predict(final, xh[sel])],
        },
        "seed": args.seed,
        "epochs": args.epochs,
        "sha256": sha,
        "trained_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "torch_version": torch.__version__,
    }
    man_path = os.path.join(args.out, f"{MODEL_NAME}.json")
    with open(man_path, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    print(f"wrote {onnx_path} (sha256 {sha[:12]}…) and {man_path} in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
