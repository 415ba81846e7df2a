#!/usr/bin/env python3
"""Train Moodfader's continuation model (a small decoder-only transformer over the Rust token
vocabulary) and export it to ONNX with its key/value cache as inputs and outputs.

Input: the JSONL token file written by `moodfader lab export-tokens` (one piece and transposition per
line, every bar `Bar, Attr x8, (Position, (Pitch, Velocity, Duration)+)*`) with its sidecar
`<tokens>.json` (vocabulary size, spec versions, attribute scale, split rule), and the per-bar
feature CSV written by `moodfader lab export-features` (for the emotion-to-attribute bridge).

What it does, in order:
  1. Loads the sequences; the split (train/valid, by piece or song) is the one the exporter wrote.
  2. Trains (or resumes from --work/checkpoint.pt, else from the committed weights in --resume,
     whose optimiser state is rebuilt with a short warm-up) with AdamW and a cosine schedule on windows of
     CONTEXT tokens that start at a bar line; the loss skips PAD and the attribute tokens (the
     sampler forces those). Stops after --steps total steps or --minutes of wall time, whichever
     comes first, checkpointing every --checkpoint-every steps and at the end.
  3. Measures the validation loss (mean cross-entropy per predicted token, fixed windows).
  4. Fits the emotion-to-attribute bridge: for each attribute, least squares of its normalised
     level in [0, 1] on (1, V, A, V*A) over the labelled VGMIDI bars (the listeners' ratings).
  5. Exports the graph by hand with plain ONNX ops (opset 17), checks ONNX Runtime against torch
     (prefill then cached steps; fails loudly beyond PARITY_ATOL) and writes the manifest.

Usage: python train_continuation.py --tokens JSONL --features CSV --work DIR --out DIR
           [--steps N] [--minutes M] [--export-only] [--threads N] [--device cuda|cpu|auto]
           [--anneal-by-time] [--d-model D --layers L --heads H --d-ff F]

Thread: main (an offline script, run by `cargo xtask train continuation`)
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import sys
import time

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

MODEL_NAME = "continuation"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8
PARITY_ATOL = 2e-3
BRIDGE_MAX_STRETCH = 2.0
QUANT_MAX_LOSS_INCREASE = 0.03  # nats per token the int8 file may lose against float32
REWARM = 200  # warm-up steps after resuming from weights only

# Architecture (kept small: the sampler runs on one core inside a plugin). Four layers: stop 34
# grew the model to six (`--grow-from` at step 10,249, the added layers starting as the identity,
# 2,794 steps more by stop 35), but stop 36 measured that those two layers add almost nothing
# (valid loss without them 1.4695 against 1.4674; dropping any other pair cost 0.3 or more on a
# sixth of the windows) while eight bars took 386 ms at p99 on a Xeon with AMX, over the 300 ms
# budget. So `--prune-from --keep-layers 0,1,2,3` took them out and training went on: 1,986 steps
# (50 min, one thread, lr 3e-4 annealed), valid loss 1.452 at step 15,029.
D_MODEL = 192
N_LAYERS = 4
N_HEADS = 4
D_FF = 768
CONTEXT = 512  # training window; the Rust side never lets its cache grow past this

# Token layout, mirrored from plugin/engine/src/play/tokens.rs (checked against the sidecar below).
PAD, BOS, EOS, BAR = 0, 1, 2, 3


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------------ data
def dataset_of(piece_id: str) -> str:
    """The data set a piece id (its path under the data folder) comes from: its first folder."""
    return piece_id.split("/", 1)[0]


def load_tokens(path: str, cache_dir: str):
    """Returns (train, valid, valid_sets, train_pieces): lists of int16 arrays, the data set of each
    validation sequence, and the number of training pieces per data set. Caches the parse as .npz
    beside --work."""
    st = os.stat(path)
    cache = os.path.join(cache_dir, f"tokens-v2-{st.st_size}-{int(st.st_mtime)}.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        counts = json.loads(str(z["train_pieces"]))
        return _unpack(z["train_flat"], z["train_len"]), _unpack(z["valid_flat"], z["valid_len"]), list(z["valid_sets"]), counts
    train, valid, valid_sets, train_pieces = [], [], [], {}
    with open(path) as fh:
        for line in fh:
            row = json.loads(line)
            seq = np.asarray(row["tokens"], dtype=np.int16)
            if row["split"] != "valid":
                train.append(seq)
                if row["transpose"] == 0:
                    d = dataset_of(row["piece"])
                    train_pieces[d] = train_pieces.get(d, 0) + 1
            elif row["transpose"] == 0:  # validate on the pieces as written
                valid.append(seq)
                valid_sets.append(dataset_of(row["piece"]))
    np.savez(
        cache,
        train_flat=np.concatenate(train),
        train_len=np.array([len(s) for s in train]),
        valid_flat=np.concatenate(valid),
        valid_len=np.array([len(s) for s in valid]),
        valid_sets=np.array(valid_sets),
        train_pieces=np.array(json.dumps(train_pieces)),
    )
    return train, valid, valid_sets, train_pieces


def _unpack(flat, lens):
    out, o = [], 0
    for n in lens:
        out.append(flat[o : o + n])
        o += n
    return out


class Windows:
    """Random training windows of CONTEXT+1 tokens starting at a bar line (or at BOS)."""

    def __init__(self, seqs, rng: np.random.Generator):
        self.seqs = seqs
        self.rng = rng
        self.starts = [np.concatenate([[0], np.flatnonzero(s == BAR)]) for s in seqs]
        lens = np.array([len(s) for s in seqs], dtype=np.float64)
        self.p = lens / lens.sum()

    def batch(self, n: int) -> torch.Tensor:
        out = np.full((n, CONTEXT + 1), PAD, dtype=np.int64)
        for i, k in enumerate(self.rng.choice(len(self.seqs), size=n, p=self.p)):
            s = self.seqs[k]
            st = self.starts[k]
            start = int(st[self.rng.integers(len(st))])
            w = s[start : start + CONTEXT + 1]
            out[i, : len(w)] = w
        return torch.from_numpy(out)


def fixed_valid_windows(seqs, per_seq: int = 2, sets=None):
    """Deterministic validation windows: up to `per_seq` evenly spaced bar starts per piece. With
    `sets` (the data set of each sequence) also returns the data set of each window."""
    rows, row_sets = [], []
    for si, s in enumerate(seqs):
        st = np.concatenate([[0], np.flatnonzero(s == BAR)])
        for j in np.linspace(0, len(st) - 1, num=min(per_seq, len(st))).astype(int):
            w = s[int(st[j]) : int(st[j]) + CONTEXT + 1]
            row = np.full(CONTEXT + 1, PAD, dtype=np.int64)
            row[: len(w)] = w
            rows.append(row)
            row_sets.append(sets[si] if sets is not None else "")
    out = torch.from_numpy(np.stack(rows))
    return (out, row_sets) if sets is not None else out


# ----------------------------------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(D_MODEL)
        self.qkv = nn.Linear(D_MODEL, 3 * D_MODEL)
        self.proj = nn.Linear(D_MODEL, D_MODEL)
        self.ln2 = nn.LayerNorm(D_MODEL)
        self.fc1 = nn.Linear(D_MODEL, D_FF)
        self.fc2 = nn.Linear(D_FF, D_MODEL)

    def forward(self, x):
        b, t, _ = x.shape
        dh = D_MODEL // N_HEADS
        q, k, v = self.qkv(self.ln1(x)).split(D_MODEL, dim=2)
        q, k, v = (z.view(b, t, N_HEADS, dh).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, D_MODEL))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Generator(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, D_MODEL)
        self.pos = nn.Embedding(CONTEXT, D_MODEL)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYERS))
        self.ln_f = nn.LayerNorm(D_MODEL)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.01)

    def forward(self, x):
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))[None]
        for b in self.blocks:
            h = b(h)
        return self.ln_f(h) @ self.tok.weight.T  # tied output projection


def loss_fn(model, batch, attr_base: int):
    x, y = batch[:, :-1], batch[:, 1:]
    logits = model(x)
    mask = (y != PAD) & (y < attr_base)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    ce = ce.view_as(y) * mask
    return ce.sum() / mask.sum().clamp(min=1), mask.sum()


@torch.no_grad()
def valid_loss(model, windows, attr_base: int, bs: int = 32) -> float:
    model.eval()
    dev = next(model.parameters()).device
    tot, n = 0.0, 0
    for i in range(0, len(windows), bs):
        with autocast(dev):
            l, m = loss_fn(model, windows[i : i + bs].to(dev), attr_base)
        tot += float(l) * int(m)
        n += int(m)
    model.train()
    return tot / max(n, 1)


def autocast(dev: torch.device):
    """bf16 autocast on a GPU (training speed); plain float32 on the CPU."""
    if dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


# ------------------------------------------------------------------------------- emotion bridge
def fit_bridge(features_csv: str, scale: dict, attributes: list[str], feature_of: dict[str, str]):
    import csv

    with open(features_csv) as fh:
        rows = list(csv.DictReader(fh))
    v = np.array([float(r["valence"]) for r in rows])
    a = np.array([float(r["arousal"]) for r in rows])
    pieces = np.array([r["piece"] for r in rows])
    X = np.stack([np.ones_like(v), v, a, v * a], axis=1)
    out = {"terms": ["1", "valence", "arousal", "valence*arousal"], "attributes": {}}
    # Hold out every 5th piece (sorted) to report how well the bridge generalises.
    uniq = sorted(set(pieces))
    hold = np.isin(pieces, uniq[::5])
    for i, name in enumerate(attributes):
        raw = np.array([float(r["f_" + feature_of[name]]) for r in rows])
        lo, hi = scale["p5"][i], scale["p95"][i]
        y = np.clip((raw - lo) / max(hi - lo, 1e-9), 0.0, 1.0)

        def held_out_r(cols):
            c, *_ = np.linalg.lstsq(X[~hold][:, cols], y[~hold], rcond=None)
            pred = X[hold][:, cols] @ c
            return float(np.corrcoef(pred, y[hold])[0, 1]) if np.std(pred) > 0 else 0.0

        # The V*A term stays only where it predicts held-out bars better.
        r_plain, r_inter = held_out_r([0, 1, 2]), held_out_r([0, 1, 2, 3])
        cols = [0, 1, 2, 3] if r_inter > r_plain + 0.005 else [0, 1, 2]
        c, *_ = np.linalg.lstsq(X[:, cols], y, rcond=None)
        coef = np.zeros(4)
        coef[cols] = c
        # Least squares shrinks toward the mean; stretch the prediction to the attribute's own
        # spread (the concordance-optimal line), at most BRIDGE_MAX_STRETCH times.
        pred = X @ coef
        k = min(float(np.std(y) / max(np.std(pred), 1e-9)), BRIDGE_MAX_STRETCH)
        coef = np.concatenate([[np.mean(y) - k * np.mean(pred) + k * coef[0]], k * coef[1:]])
        r = max(r_plain, r_inter) if len(cols) == 4 else r_plain
        out["attributes"][name] = {"coef": [float(c) for c in coef], "holdout_r": r, "holdout_r_without_interaction": r_plain, "stretch": k}
        log(f"  bridge {name:15s} coef {np.round(coef, 3)}  held-out r {r:+.3f} (without V*A {r_plain:+.3f})")
    # The V*A term is evaluated only inside the span the ratings cover (plugin/engine/src/play/
    # steering.rs, EmotionBridge::interaction_span): listeners' means keep |V*A| small, the pad's
    # corners do not.
    lo, hi = np.percentile(v * a, [1, 99])
    out["interaction_span"] = [round(float(lo), 4), round(float(hi), 4)]
    out["fitted_on"] = (
        f"{len(rows)} labelled VGMIDI bars (listener mean ratings): least squares on (1, V, A) plus V*A where it "
        "predicts held-out bars better, then the "
        f"prediction stretched to the attribute's spread (at most {BRIDGE_MAX_STRETCH}x); held-out r (before "
        "stretching, which does not change r) from a fit without every 5th piece"
    )
    return out


# ---------------------------------------------------------------------------------------- export
def export_onnx(model: Generator, path: str, vocab: int) -> None:
    """Hand-built graph whose key/value cache is updated in place.

    Inputs: tokens int64 [1,T]; positions int64 [1,T] (absolute, < CONTEXT); seqlens_k int32 [1]
    (P+T-1) and total_sequence_length int32 scalar (P+T), where P tokens are cached already;
    past_key_l / past_value_l float [1,H,C,Dh] per layer: the caller's cache of capacity C >= P+T.
    Outputs: logits float [1,V] for the LAST input token only; present_key_l / present_value_l
    [1,H,C,Dh], which the caller binds to the same buffers as the past (ONNX Runtime's I/O
    binding), so the new keys and values are written into slots P..P+T and nothing is copied.

    Attention is ONNX Runtime's GroupQueryAttention (as many key/value heads as query heads,
    causal), LayerNorm with the residual and bias adds SkipLayerNormalization, GELU with its bias
    BiasGelu: contrib operators (com.microsoft) that ONNX Runtime's CPU build carries. Stop 36
    measured a decode step of the four-layer model, int8, one thread, on a 2-core Xeon with AMX
    (the other core training), with 20 / 150 tokens cached: 0.26-0.27 / 0.39-0.40 ms in plain
    ONNX operators, which concatenate past and new keys into a new present each step (perf: a
    sixth of the time in memmove); 0.25 / 0.39 ms with MultiHeadAttention, which still
    concatenates; 0.19-0.21 / 0.26-0.27 ms with this graph."""
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    dh = D_MODEL // N_HEADS
    inits, nodes = [], []
    ms = "com.microsoft"

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op, ins, outs, domain=None, **kw):
        nodes.append(helper.make_node(op, ins, outs, domain=domain, **kw))
        return outs[0]

    init("tok_emb", sd["tok.weight"])
    init("tok_emb_t", sd["tok.weight"].T.copy())
    init("pos_emb", sd["pos.weight"])
    init("split_qkv", np.array([D_MODEL, D_MODEL, D_MODEL], dtype=np.int64))
    init("last", np.array(-1, dtype=np.int64))

    inputs = [
        helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "T"]),
        helper.make_tensor_value_info("positions", TensorProto.INT64, [1, "T"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, vocab])]
    te = node("Gather", ["tok_emb", "tokens"], ["te"], axis=0)
    pe = node("Gather", ["pos_emb", "positions"], ["pe"], axis=0)
    w, b = init("ln1_w0", sd["blocks.0.ln1.weight"]), init("ln1_b0", sd["blocks.0.ln1.bias"])
    h = node("SkipLayerNormalization", [te, pe, w, b], ["h_0", "", "", "x_0"], domain=ms, epsilon=1e-5)
    x = "x_0"
    for l in range(N_LAYERS):
        p = f"blocks.{l}."
        pre = f"l{l}_"
        for nm in ("qkv", "proj", "fc1", "fc2"):
            init(pre + nm + "_w", sd[p + nm + ".weight"].T.copy())
            init(pre + nm + "_b", sd[p + nm + ".bias"])
        init(pre + "ln2_w", sd[p + "ln2.weight"])
        init(pre + "ln2_b", sd[p + "ln2.bias"])
        inputs += [
            helper.make_tensor_value_info(f"past_key_{l}", TensorProto.FLOAT, [1, N_HEADS, "C", dh]),
            helper.make_tensor_value_info(f"past_value_{l}", TensorProto.FLOAT, [1, N_HEADS, "C", dh]),
        ]
        outputs += [
            helper.make_tensor_value_info(f"present_key_{l}", TensorProto.FLOAT, [1, N_HEADS, "C", dh]),
            helper.make_tensor_value_info(f"present_value_{l}", TensorProto.FLOAT, [1, N_HEADS, "C", dh]),
        ]
        qkv = node("MatMul", [h, pre + "qkv_w"], [pre + "qkv0"])
        qkv = node("Add", [qkv, pre + "qkv_b"], [pre + "qkv"])
        node("Split", [qkv, "split_qkv"], [pre + "q", pre + "k", pre + "v"], axis=2)
        a = node(
            "GroupQueryAttention",
            [pre + "q", pre + "k", pre + "v", f"past_key_{l}", f"past_value_{l}", "seqlens_k", "total_sequence_length"],
            [pre + "a", f"present_key_{l}", f"present_value_{l}"],
            domain=ms,
            num_heads=N_HEADS,
            kv_num_heads=N_HEADS,
        )
        c = node("MatMul", [a, pre + "proj_w"], [pre + "c"])
        h2 = node("SkipLayerNormalization", [c, x, pre + "ln2_w", pre + "ln2_b", pre + "proj_b"], [pre + "h2", "", "", pre + "x1"], domain=ms, epsilon=1e-5)
        f = node("MatMul", [h2, pre + "fc1_w"], [pre + "f0"])
        g = node("BiasGelu", [f, pre + "fc1_b"], [pre + "g"], domain=ms)  # exact (erf) GELU
        f = node("MatMul", [g, pre + "fc2_w"], [pre + "f2"])
        if l + 1 < N_LAYERS:
            w, b = init(f"ln1_w{l + 1}", sd[f"blocks.{l + 1}.ln1.weight"]), init(f"ln1_b{l + 1}", sd[f"blocks.{l + 1}.ln1.bias"])
            h = node("SkipLayerNormalization", [f, pre + "x1", w, b, pre + "fc2_b"], [f"h_{l + 1}", "", "", f"x_{l + 1}"], domain=ms, epsilon=1e-5)
            x = f"x_{l + 1}"
        else:
            init("lnf_w", sd["ln_f.weight"])
            init("lnf_b", sd["ln_f.bias"])
            node("SkipLayerNormalization", [f, pre + "x1", "lnf_w", "lnf_b", pre + "fc2_b"], ["h_f"], domain=ms, epsilon=1e-5)
    xl = node("Gather", ["h_f", "last"], ["x_last"], axis=1)  # [1, D]
    node("MatMul", [xl, "tok_emb_t"], ["logits"])
    graph = helper.make_graph(nodes, "moodfader_continuation", inputs, outputs, inits)
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(ms, 1)], producer_name="moodfader"
    )
    m.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(m)
    onnx.save(m, path)


def run_cached(sess, toks: list[int], prefill: int):
    """Prefill `prefill` tokens, then feed the rest one by one through a cache of capacity
    len(toks) updated in place (past and present bound to the same buffers, as the plugin does);
    returns logits after each step (the prefill's last, then one per single step)."""
    import onnxruntime as ort

    dh = D_MODEL // N_HEADS
    cache = [ort.OrtValue.ortvalue_from_numpy(np.zeros((1, N_HEADS, len(toks), dh), np.float32)) for _ in range(2 * N_LAYERS)]
    outs = []
    pos = 0
    for ch in [toks[:prefill]] + [[t] for t in toks[prefill:]]:
        t = len(ch)
        b = sess.io_binding()
        b.bind_cpu_input("tokens", np.array([ch], np.int64))
        b.bind_cpu_input("positions", np.arange(pos, pos + t, dtype=np.int64)[None])
        b.bind_cpu_input("seqlens_k", np.array([pos + t - 1], np.int32))
        b.bind_cpu_input("total_sequence_length", np.array(pos + t, np.int32))
        b.bind_output("logits")
        for l in range(N_LAYERS):
            for kind, v in (("key", cache[2 * l]), ("value", cache[2 * l + 1])):
                b.bind_ortvalue_input(f"past_{kind}_{l}", v)
                b.bind_ortvalue_output(f"present_{kind}_{l}", v)
        sess.run_with_iobinding(b)
        outs.append(b.copy_outputs_to_cpu()[0][0])
        pos += t
    return np.stack(outs)


def ort_loss(path: str, windows: torch.Tensor, attr_base: int, n: int = 24, length: int = 256) -> float:
    """Mean next-token cross-entropy through ONNX Runtime (cached steps), PAD and attribute
    targets skipped: the loss of the file the plugin will run."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    tot, cnt = 0.0, 0
    idx = np.linspace(0, len(windows) - 1, num=min(n, len(windows))).astype(int)
    for i in idx:
        w = windows[i].numpy()[: length + 1]
        k = int(np.argmax(w == PAD)) if (w == PAD).any() else len(w)
        if k < 3:
            continue
        logits = run_cached(sess, [int(t) for t in w[: k - 1]], 1)
        y = w[1:k]
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        ce = lse - logits[np.arange(len(y)), y]
        m = y < attr_base
        tot += float(ce[m].sum())
        cnt += int(m.sum())
    return tot / max(cnt, 1)


def parity_check(path: str, model: Generator, seq: np.ndarray) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    toks = [int(t) for t in seq[:200]]
    prefill = 150
    got = run_cached(sess, toks, prefill)
    with torch.no_grad():
        model.eval()
        full = model(torch.tensor([toks]))[0].numpy()
    want = full[prefill - 1 :]
    return float(np.abs(got - want).max())


# ------------------------------------------------------------------------------------------- main
def main() -> None:
    global D_MODEL, N_LAYERS, N_HEADS, D_FF
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--features", required=True, help="VGMIDI per-bar features CSV (for the bridge)")
    ap.add_argument("--work", required=True, help="folder for the checkpoint and the parse cache")
    ap.add_argument("--out", required=True, help="folder for continuation.onnx and continuation.json")
    ap.add_argument("--steps", type=int, default=60000, help="total optimiser steps (resume counts)")
    ap.add_argument("--minutes", type=float, default=1e9, help="wall-clock limit for this run")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--checkpoint-every", type=int, default=500)
    ap.add_argument("--export-only", action="store_true", help="export the checkpoint, do not train")
    ap.add_argument("--resume", default="", help="committed weights-only checkpoint: read when --work has none, rewritten after training")
    ap.add_argument("--grow-from", default="", help="weights-only checkpoint of a shallower model (same width) to start from when --work has no checkpoint: its layers come first, each added layer starts as the identity (its output projections zero)")
    ap.add_argument("--prune-from", default="", help="weights-only checkpoint of a deeper model (same width) to start from when --work has no checkpoint: keeps the layers --keep-layers names, in that order")
    ap.add_argument("--keep-layers", default="", help="with --prune-from: comma-separated layer indices of the deeper model to keep (as many as --layers)")
    ap.add_argument("--no-quantize", dest="quantize", action="store_false", help="always ship float32")
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when there is one)")
    ap.add_argument("--anneal-by-time", action="store_true", help="the cosine schedule follows --minutes when that ends the run before --steps")
    ap.add_argument("--d-model", type=int, default=D_MODEL)
    ap.add_argument("--layers", type=int, default=N_LAYERS)
    ap.add_argument("--heads", type=int, default=N_HEADS)
    ap.add_argument("--d-ff", type=int, default=D_FF)
    args = ap.parse_args()
    D_MODEL, N_LAYERS, N_HEADS, D_FF = args.d_model, args.layers, args.heads, args.d_ff
    if D_MODEL % N_HEADS:
        raise SystemExit(f"--d-model {D_MODEL} is not a multiple of --heads {N_HEADS}")
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    with open(args.tokens + ".json") as fh:
        side = json.load(fh)
    vocab = int(side["vocab_size"])
    attr_base = vocab - 64  # the attribute tokens are the vocabulary's last 8 x 8 ids
    train, valid, valid_sets, train_pieces = load_tokens(args.tokens, args.work)
    n_train = sum(len(s) for s in train)
    log(f"data: {len(train)} train / {len(valid)} valid sequences, {n_train} train tokens, vocab {vocab}; training pieces {train_pieces}")
    vwin, vwin_sets = fixed_valid_windows(valid, sets=valid_sets)

    torch.manual_seed(args.seed)
    model = Generator(vocab).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.98))
    ckpt_path = os.path.join(args.work, "checkpoint.pt")
    step, history, tokens_seen, train_seconds = 0, [], 0, 0.0
    rewarm_from = None
    rng = np.random.default_rng(args.seed)
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, weights_only=False, map_location=dev)
        if ck["vocab"] != vocab or ck["arch"] != arch_dict():
            raise SystemExit(f"{ckpt_path}: checkpoint is for another vocabulary or architecture; move it away")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, history, tokens_seen = ck["step"], ck["history"], ck["tokens_seen"]
        train_seconds = ck.get("train_seconds", 0.0)
        rng = np.random.default_rng(args.seed + step)
        log(f"resumed from {ckpt_path} at step {step} ({tokens_seen} tokens, {train_seconds / 60:.1f} min trained)")
    elif (args.resume and os.path.exists(args.resume)) or args.grow_from or args.prune_from:
        # Weights only: the repository keeps them in float16 (a sixth of the size), and a deeper or
        # shallower model starts from another one's. AdamW's moments start again, so the learning
        # rate warms up again over REWARM steps.
        width = ("d_model", "heads", "d_ff", "context")
        if args.resume and os.path.exists(args.resume):
            ck = torch.load(args.resume, weights_only=False, map_location=dev)
            if ck["vocab"] != vocab or ck["arch"] != arch_dict():
                raise SystemExit(f"{args.resume}: committed checkpoint is for another vocabulary or architecture; move it away")
            state = {k: v.float() for k, v in ck["model"].items()}
            how = f"resumed weights from {args.resume}"
        elif args.grow_from:
            ck = torch.load(args.grow_from, weights_only=False, map_location=dev)
            a = ck["arch"]
            if ck["vocab"] != vocab or any(a[k] != arch_dict()[k] for k in width) or a["layers"] >= N_LAYERS:
                raise SystemExit(f"{args.grow_from}: not a shallower model of the same width and vocabulary ({a})")
            state = model.state_dict()
            for k, v in ck["model"].items():
                state[k] = v.float()
            for i in range(a["layers"], N_LAYERS):
                for name in ("proj", "fc2"):
                    state[f"blocks.{i}.{name}.weight"].zero_()
                    state[f"blocks.{i}.{name}.bias"].zero_()
            how = f"grown from {args.grow_from} ({a['layers']} layers) to {N_LAYERS}, the new ones starting as the identity;"
        else:
            # Stop 36 measured that layers 4 and 5 of the six-layer model (grown at step 10,249) add
            # almost nothing: without them the valid loss was 1.4695 against 1.4674, while dropping
            # any other pair cost 0.3 or more on a sixth of the windows.
            ck = torch.load(args.prune_from, weights_only=False, map_location=dev)
            a = ck["arch"]
            keep = [int(x) for x in args.keep_layers.split(",") if x.strip()]
            if ck["vocab"] != vocab or any(a[k] != arch_dict()[k] for k in width) or len(keep) != N_LAYERS or any(not 0 <= i < a["layers"] for i in keep):
                raise SystemExit(f"{args.prune_from}: not a deeper model of the same width, or --keep-layers {args.keep_layers!r} does not name {N_LAYERS} of its layers ({a})")
            state = {}
            for k, v in ck["model"].items():
                if k.startswith("blocks."):
                    i, rest = k.split(".", 2)[1:]
                    if int(i) not in keep:
                        continue
                    k = f"blocks.{keep.index(int(i))}.{rest}"
                state[k] = v.float()
            how = f"pruned from {args.prune_from} ({a['layers']} layers) to its layers {keep};"
        model.load_state_dict(state)
        step, history, tokens_seen = ck["step"], ck["history"], ck["tokens_seen"]
        train_seconds = ck.get("train_seconds", 0.0)
        rewarm_from = step
        rng = np.random.default_rng(args.seed + step)
        log(f"{how} at step {step} ({train_seconds / 60:.1f} min trained); optimiser state rebuilt")
    log(f"model: {n_params} parameters, d={D_MODEL} layers={N_LAYERS} heads={N_HEADS} ff={D_FF} context={CONTEXT}, on {dev}")

    def save():
        tmp = ckpt_path + ".tmp"
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "history": history, "tokens_seen": tokens_seen,
             "train_seconds": train_seconds, "vocab": vocab, "arch": arch_dict()},
            tmp,
        )
        os.replace(tmp, ckpt_path)

    if not args.export_only:
        win = Windows(train, rng)
        warmup = 500
        run_start = time.time()
        last_log = time.time()
        while step < args.steps and (time.time() - run_start) / 60 < args.minutes:
            warm = (step + 1) / warmup if rewarm_from is None else (step - rewarm_from + 1) / REWARM
            progress = step / args.steps
            if args.anneal_by_time:
                progress = max(progress, (time.time() - run_start) / 60 / args.minutes)
            lr = args.lr * min(1.0, warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
            for g in opt.param_groups:
                g["lr"] = lr
            ts = time.time()
            with autocast(dev):
                l, m = loss_fn(model, win.batch(args.batch).to(dev, non_blocking=True), attr_base)
            opt.zero_grad(set_to_none=True)
            l.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            train_seconds += time.time() - ts
            step += 1
            tokens_seen += int(m)
            if time.time() - last_log > 60:
                log(f"step {step} loss {float(l):.3f} lr {lr:.2e} {tokens_seen / max(train_seconds, 1e-9):.0f} tok/s")
                last_log = time.time()
            if step % args.checkpoint_every == 0:
                vl = valid_loss(model, vwin, attr_base)
                history.append({"step": step, "train_loss": float(l), "valid_loss": vl, "tokens_seen": tokens_seen})
                log(f"step {step}: valid loss {vl:.4f} (train {float(l):.3f}); checkpoint")
                save()
        save()
        if args.resume:
            tmp = args.resume + ".tmp"
            os.makedirs(os.path.dirname(os.path.abspath(args.resume)), exist_ok=True)
            torch.save(
                {"model": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, "step": step, "history": history, "tokens_seen": tokens_seen,
                 "train_seconds": train_seconds, "vocab": vocab, "arch": arch_dict()},
                tmp,
            )
            os.replace(tmp, args.resume)
            log(f"wrote the weights-only checkpoint {args.resume} ({os.path.getsize(args.resume)} bytes) for the next session")

    vl = valid_loss(model, vwin, attr_base)
    log(f"final valid loss {vl:.4f} at step {step}")
    per_set = {}
    for name in sorted(set(vwin_sets)):
        idx = [i for i, s in enumerate(vwin_sets) if s == name]
        per_set[name] = round(valid_loss(model, vwin[idx], attr_base), 4)
    log(f"valid loss per data set: {per_set}")
    model = model.cpu().float()
    attributes = side["attributes"]
    bridge = fit_bridge(args.features, side["attribute_scale"], attributes, dict(zip(attributes, side["attribute_features"])))
    onnx_path = os.path.join(args.out, f"{MODEL_NAME}.onnx")
    tmp_path = onnx_path + ".tmp"
    export_onnx(model, tmp_path, vocab)
    diff = parity_check(tmp_path, model, vwin[0].numpy())
    if diff > PARITY_ATOL:
        os.remove(tmp_path)
        raise SystemExit(f"PARITY FAILED: max |onnxruntime - torch| = {diff:.3g} > {PARITY_ATOL}")
    log(f"parity: onnxruntime (prefill + cached steps) vs torch, max |diff| = {diff:.2e}")
    # Int8 weights (dynamic quantisation of the MatMuls) when they cost little: ~4x smaller, ~2x faster.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q_path = onnx_path + ".q.tmp"
    # The contrib operators have no ONNX shape inference, so the quantiser is told the tensors are float.
    quantize_dynamic(tmp_path, q_path, weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": TensorProto.FLOAT})
    loss_fp32 = ort_loss(tmp_path, vwin, attr_base)
    loss_int8 = ort_loss(q_path, vwin, attr_base)
    quantized = args.quantize and loss_int8 - loss_fp32 <= QUANT_MAX_LOSS_INCREASE
    log(f"onnxruntime valid loss: float32 {loss_fp32:.4f}, int8 {loss_int8:.4f} -> shipping {'int8' if quantized else 'float32'}")
    os.replace(q_path if quantized else tmp_path, onnx_path)
    for p in (tmp_path, q_path):
        if os.path.exists(p):
            os.remove(p)
    with open(onnx_path, "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    manifest = {
        "name": MODEL_NAME,
        "token_spec_version": side["token_spec_version"],
        "feature_spec_version": side["feature_spec_version"],
        "vocab_size": vocab,
        "architecture": {**arch_dict(), "parameters": n_params, "kind": "decoder-only transformer, pre-LN, learned positions, tied output"},
        "inputs": {
            "tokens": "int64 [1,T]",
            "positions": "int64 [1,T], absolute positions, each < context",
            "seqlens_k": "int32 [1]: P+T-1, where P tokens are cached already",
            "total_sequence_length": "int32 scalar: P+T",
            "past_key_l / past_value_l": f"float32 [1,{N_HEADS},C,{D_MODEL // N_HEADS}] for l in 0..{N_LAYERS}: the cache, capacity C >= P+T, slots 0..P filled",
        },
        "outputs": {
            "logits": f"float32 [1,{vocab}] for the last input token",
            "present_key_l / present_value_l": f"float32 [1,{N_HEADS},C,{D_MODEL // N_HEADS}]: bound to the past's buffers; slots P..P+T are written",
        },
        "opset": ONNX_OPSET,
        "attribute_scale": side["attribute_scale"],
        "attributes": attributes,
        "bridge": bridge,
        "training_data": "training pieces per data set (untransposed): "
        + ", ".join(f"{k} {v}" for k, v in sorted(train_pieces.items()))
        + "; split: "
        + side["split"],
        "valid_loss_per_dataset": per_set,
        "transpositions": side["transpositions"],
        "train_tokens": n_train,
        "steps": step,
        "batch": args.batch,
        "tokens_seen": tokens_seen,
        "train_minutes": round(train_seconds / 60, 1),
        "valid_loss": round(vl, 4),
        "history": history[-40:],
        "parity_max_abs_diff": diff,
        "quantized": "int8 dynamic (MatMul weights)" if quantized else "no (float32)",
        "ort_valid_loss": {"float32": round(loss_fp32, 4), "int8": round(loss_int8, 4)},
        "sha256": sha,
        "trained_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "seed": args.seed,
    }
    man_path = os.path.join(args.out, f"{MODEL_NAME}.json")
    with open(man_path + ".tmp", "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.write("\n")
    os.replace(man_path + ".tmp", man_path)
    log(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes, sha256 {sha[:12]}…) and {man_path} in {time.time() - t0:.0f}s")


def arch_dict():
    return {"d_model": D_MODEL, "layers": N_LAYERS, "heads": N_HEADS, "d_ff": D_FF, "context": CONTEXT}


if __name__ == "__main__":
    sys.exit(main())
