"""The reference for Moodfader's transcriber: Spotify's own `basic-pitch` 0.4.0 package, run on the
same `nmp.onnx` through ONNX Runtime, with its default settings (`basic_pitch.inference.predict`).

    python basic_pitch_reference.py --model nmp.onnx OUT_DIR A.wav [B.wav ...]

writes OUT_DIR/<stem>.csv (start_s,end_s,pitch,velocity, as `moodfader transcribe --csv` writes)
for each file and prints one JSON line per file with the wall time of `predict` (model load and
module import excluded; `--cli-time` adds a run of the package's own command line, whose time
includes everything a user waits for).

Installed by `cargo xtask eval transcription` into target/basic-pitch-venv: the basic-pitch wheel
without its TensorFlow requirement (ONNX Runtime runs the model), librosa and friends.

Thread: main (an offline script, run by eval_transcription.py)
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--cli-time", action="store_true")
    ap.add_argument("out_dir")
    ap.add_argument("wavs", nargs="+")
    args = ap.parse_args()

    from basic_pitch.inference import Model, predict

    model = Model(args.model)
    out_dir = pathlib.Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for wav in args.wavs:
        t0 = time.perf_counter()
        _, _, notes = predict(wav, model)
        predict_s = time.perf_counter() - t0
        rows = sorted((float(s), float(e), int(p), int(round(127 * a))) for s, e, p, a, _ in notes)
        path = out_dir / (pathlib.Path(wav).stem + ".csv")
        with open(path, "w") as f:
            f.write("start_s,end_s,pitch,velocity\n")
            for s, e, p, v in rows:
                f.write(f"{s:.6f},{e:.6f},{p},{v}\n")
        result = {"wav": wav, "notes": len(rows), "predict_s": predict_s}
        if args.cli_time:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "basic_pitch.predict", "--model-path", args.model, tmp, wav],
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                result["cli_s"] = time.perf_counter() - t0
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
