"""How closely Moodfader's Basic Pitch transcriber follows Spotify's `basic-pitch` package, on audio
rendered from real dataset pieces, and how both compare with the source MIDI.

    python eval_transcription.py --moodfader target/debug/moodfader \
        --python-venv-python /path/to/venv/bin/python --model nmp.onnx \
        --data ../shared/data --out /tmp/tr_eval --seconds 30 --n-vgmidi 4 --n-pop909 4

For the first N pieces of each set in sorted path order (VGMIDI: labelled/midi/*.mid; POP909:
NNN/NNN.mid) it cuts the MIDI to its first S seconds (notes starting before S, ends clipped at S;
drum tracks dropped), renders it with `moodfader render` at 44.1 kHz, transcribes it with
`moodfader transcribe --csv`, runs basic_pitch_reference.py on all the WAVs in one call, and scores
note-level precision / recall / F1 with mir_eval (onset tolerance 50 ms, offsets ignored):

    (a) ours vs the Python reference   (b) ours vs the source MIDI   (c) reference vs the source MIDI

It prints a per-piece table and pooled (micro: summed matches) and mean F1s, and writes them to
OUT/summary.json. This script must run under the interpreter that has pretty_midi and mir_eval (the
reference venv's works); --python-venv-python runs the reference script.

Thread: main (an offline script)
"""

import argparse
import csv
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import mir_eval
import numpy as np
import pretty_midi

HERE = pathlib.Path(__file__).resolve().parent


def pick_pieces(data: pathlib.Path, n_vgmidi: int, n_pop909: int) -> list[tuple[str, pathlib.Path]]:
    vg = sorted((data / "vgmidi" / "labelled" / "midi").glob("*.mid"))[:n_vgmidi]
    pop = sorted(p for p in (data / "pop909").glob("*/*.mid") if p.stem == p.parent.name)[:n_pop909]
    return [("vgmidi", p) for p in vg] + [("pop909", p) for p in pop]


def safe_stem(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:60]


def truncate_midi(src: pathlib.Path, dst: pathlib.Path, seconds: float) -> np.ndarray:
    """Write the first `seconds` of `src` (no drums) to `dst`; return its notes as rows
    (start, end, pitch)."""
    pm = pretty_midi.PrettyMIDI(str(src))
    pm.instruments = [i for i in pm.instruments if not i.is_drum]
    rows = []
    for inst in pm.instruments:
        notes = []
        for n in inst.notes:
            if n.start >= seconds:
                continue
            n.end = min(n.end, seconds)
            if n.end <= n.start:
                continue
            notes.append(n)
            rows.append((n.start, n.end, n.pitch))
        inst.notes = notes
        inst.control_changes = [c for c in inst.control_changes if c.time < seconds]
        inst.pitch_bends = [b for b in inst.pitch_bends if b.time < seconds]
    pm.write(str(dst))
    return np.array(sorted(rows), dtype=float).reshape(-1, 3)


def read_csv(path: pathlib.Path) -> np.ndarray:
    rows = []
    with open(path) as f:
        for r in csv.DictReader(f):
            s, e = float(r["start_s"]), float(r["end_s"])
            if e > s:
                rows.append((s, e, int(r["pitch"])))
    return np.array(rows, dtype=float).reshape(-1, 3)


def score(ref: np.ndarray, est: np.ndarray) -> dict:
    n_ref, n_est = len(ref), len(est)
    if n_ref and n_est:
        matched = len(
            mir_eval.transcription.match_notes(
                ref[:, :2], pretty_midi.note_number_to_hz(ref[:, 2]),
                est[:, :2], pretty_midi.note_number_to_hz(est[:, 2]),
                onset_tolerance=0.05, offset_ratio=None,
            )
        )
        p, r, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
            ref[:, :2], pretty_midi.note_number_to_hz(ref[:, 2]),
            est[:, :2], pretty_midi.note_number_to_hz(est[:, 2]),
            onset_tolerance=0.05, offset_ratio=None,
        )
    else:
        matched, p, r = 0, float(n_ref == n_est), float(n_ref == n_est)
        f = float(n_ref == n_est)
    return {"n_ref": n_ref, "n_est": n_est, "matched": matched,
            "precision": float(p), "recall": float(r), "f1": float(f)}


def pooled(scores: list[dict]) -> dict:
    m = sum(s["matched"] for s in scores)
    nr = sum(s["n_ref"] for s in scores)
    ne = sum(s["n_est"] for s in scores)
    p = m / ne if ne else 0.0
    r = m / nr if nr else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"matched": m, "n_ref": nr, "n_est": ne, "precision": p, "recall": r, "f1": f,
            "mean_f1": float(np.mean([s["f1"] for s in scores])) if scores else 0.0}


def run(cmd: list[str], env=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moodfader", required=True)
    ap.add_argument("--python-venv-python", required=True)
    ap.add_argument("--model", required=True, help="Basic Pitch nmp.onnx")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--n-vgmidi", type=int, default=4)
    ap.add_argument("--n-pop909", type=int, default=4)
    ap.add_argument("--rate", type=int, default=44100)
    args = ap.parse_args()

    out = pathlib.Path(args.out)
    for sub in ("midi", "wav", "ours", "ref"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("MOODFADER_BASIC_PITCH", str(pathlib.Path(args.model).resolve()))

    pieces = []
    counts: dict[str, int] = {}
    for dataset, src in pick_pieces(pathlib.Path(args.data), args.n_vgmidi, args.n_pop909):
        i = counts[dataset] = counts.get(dataset, -1) + 1
        stem = f"{dataset}_{i:02d}_{safe_stem(src.stem)}"
        mid, wav = out / "midi" / f"{stem}.mid", out / "wav" / f"{stem}.wav"
        src_notes = truncate_midi(src, mid, args.seconds)
        t0 = time.perf_counter()
        run([args.moodfader, "render", str(mid), "-o", str(wav), "--rate", str(args.rate)], env)
        t1 = time.perf_counter()
        run([args.moodfader, "transcribe", str(wav), "-o", str(out / "ours" / f"{stem}.mid"),
             "--csv", str(out / "ours" / f"{stem}.csv")], env)
        t2 = time.perf_counter()
        print(f"{stem}: render {t1 - t0:.1f}s, transcribe {t2 - t1:.1f}s", file=sys.stderr, flush=True)
        pieces.append({"stem": stem, "dataset": dataset, "source": str(src), "src_notes": src_notes,
                       "render_s": t1 - t0, "ours_s": t2 - t1})

    t0 = time.perf_counter()
    ref_run = run([args.python_venv_python, str(HERE / "basic_pitch_reference.py"), "--model", args.model,
                   str(out / "ref")] + [str(out / "wav" / f"{p['stem']}.wav") for p in pieces])
    print(f"reference: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
    ref_times = {pathlib.Path(j["wav"]).stem: j["predict_s"]
                 for j in (json.loads(l) for l in ref_run.stdout.splitlines() if l.startswith("{"))}

    rows = []
    for p in pieces:
        ours = read_csv(out / "ours" / f"{p['stem']}.csv")
        ref = read_csv(out / "ref" / f"{p['stem']}.csv")
        src = p["src_notes"]
        rows.append({
            "piece": p["stem"], "dataset": p["dataset"], "source": p["source"],
            "n_src": len(src), "n_ours": len(ours), "n_ref": len(ref),
            "ours_s": p["ours_s"], "ref_predict_s": ref_times.get(p["stem"]),
            "a_ours_vs_ref": score(ref, ours),
            "b_ours_vs_midi": score(src, ours),
            "c_ref_vs_midi": score(src, ref),
        })

    keys = ("a_ours_vs_ref", "b_ours_vs_midi", "c_ref_vs_midi")
    summary = {
        "seconds": args.seconds, "rate": args.rate, "onset_tolerance": 0.05, "offset_ratio": None,
        "pieces": rows,
        "pooled": {k: pooled([r[k] for r in rows]) for k in keys},
        "by_dataset": {ds: {k: pooled([r[k] for r in rows if r["dataset"] == ds]) for k in keys}
                       for ds in sorted({r["dataset"] for r in rows})},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    print(f"{'piece':<44} {'src':>5} {'ours':>5} {'ref':>5}  {'(a)F1':>6} {'(b)F1':>6} {'(c)F1':>6}")
    for r in rows:
        print(f"{r['piece'][:44]:<44} {r['n_src']:>5} {r['n_ours']:>5} {r['n_ref']:>5}  "
              + " ".join(f"{r[k]['f1']:>6.3f}" for k in keys))
    for name, block in [("pooled", summary["pooled"])] + [(f"pooled {d}", b) for d, b in summary["by_dataset"].items()]:
        print(f"{name:<62} " + " ".join(f"{block[k]['f1']:>6.3f}" for k in keys))
        print(f"{'  mean' :<62} " + " ".join(f"{block[k]['mean_f1']:>6.3f}" for k in keys))
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
