#!/bin/bash
# Trains continuation models on a GPU machine lent by the `device` tool, which has PyTorch but
# neither Rust nor the data sets. Two halves:
#
#   bash models/train/gpu_run.sh prep      # here: builds the CLI, exports the VGMIDI features,
#                                          # packs the MIDI files into .dev/ (git-ignored through
#                                          # .git/info/exclude: echo /.dev/ >> .git/info/exclude)
#   bash models/train/gpu_run.sh run       # there (run with carry [".dev"]): the token export with
#                                          # the Rust exporter (7 transpositions in parallel), then
#                                          # the configurations in CONFIGS trained side by side on
#                                          # the one GPU for MIN minutes each (the cosine schedule
#                                          # follows the clock), each packed as $OUT/<name>.tar
#                                          # (continuation.onnx, .json, the weights-only .pt, log)
#
# Afterwards, here: unpack the chosen tar, copy continuation.onnx/.json into models/ and the .pt to
# models/train/checkpoints/continuation.pt, bench it (`cargo xtask bench`: first bar <= 50 ms,
# 8 bars <= 300 ms p99 on one core), then `cargo xtask train bridge` and `cargo xtask eval
# continuation` (the bridge and the metrics are measured on this machine's CPU build).
#
# Thread: main (a shell script, run by hand)
set -u
cd "$(dirname "$0")/../.."
case "${1:-}" in
prep)
  data=${MOODFADER_DATA:-../shared/data}
  mkdir -p .dev
  cargo build --release -p moodfader-cli --bin moodfader || exit 1
  cp target/release/moodfader .dev/ || exit 1
  ./target/release/moodfader lab export-features --data "$data" -o .dev/vgmidi_features.csv || exit 1
  (cd "$data" && find pop1k7 pop909 vgmidi emopia -name '*.mid' -o -name labels.json | tar -cf - -T - | xz -T2 -6) > .dev/data.tar.xz || exit 1
  du -sh .dev/*
  ;;
run)
  MIN=${MIN:-5.5}
  CONFIGS=${CONFIGS:-"A:256:4:4:1024 B:192:6:4:768 D:192:4:4:768"}
  T0=$(date +%s)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  mkdir -p /tmp/d /tmp/tok && tar -xJf .dev/data.tar.xz -C /tmp/d || exit 1
  TS="-3 -2 -1 0 1 2 3"
  for t in $TS; do .dev/moodfader lab export-tokens --data /tmp/d --transpose=$t -o /tmp/tok/t$t.jsonl > /tmp/tok/log$t 2>&1 & done
  wait
  cat /tmp/tok/log0
  (for t in $TS; do cat /tmp/tok/t$t.jsonl; done) > /tmp/tok/tokens.jsonl || exit 1
  python3 - <<'PY' || exit 1
import json
ts = [-3, -2, -1, 0, 1, 2, 3]
ss = [json.load(open(f"/tmp/tok/t{t}.jsonl.json")) for t in ts]
m = dict(ss[ts.index(0)])
assert all(s["attribute_scale"] == m["attribute_scale"] for s in ss), "attribute scales differ"
m["transpositions"] = ts
m["num_sequences"] = sum(s["num_sequences"] for s in ss)
m["num_tokens"] = sum(s["num_tokens"] for s in ss)
json.dump(m, open("/tmp/tok/tokens.jsonl.json", "w"), indent=2)
print("tokens:", m["num_sequences"], "sequences,", m["num_tokens"], "tokens")
PY
  echo "export done in $(($(date +%s) - T0)) s"
  train() { # name d_model layers heads d_ff
    mkdir -p /tmp/out/$1
    PYTHONUNBUFFERED=1 python3 models/train/train_continuation.py --tokens /tmp/tok/tokens.jsonl \
      --features .dev/vgmidi_features.csv --work /tmp/w$1 --out /tmp/out/$1 --resume /tmp/out/$1/continuation.pt \
      --steps 1000000 --minutes "$MIN" --anneal-by-time --checkpoint-every 2000 --batch 128 --lr 1.5e-3 \
      --d-model $2 --layers $3 --heads $4 --d-ff $5 > /tmp/out/$1/log 2>&1
    echo "$1 exit $?" >> /tmp/out/$1/log
    tar -cf "$OUT/$1.tar" -C /tmp/out "$1"
  }
  for c in $CONFIGS; do IFS=: read -r n d l h f <<< "$c"; train "$n" "$d" "$l" "$h" "$f" & done
  wait
  for c in $CONFIGS; do
    n=${c%%:*}
    echo "== $n"
    grep -h "data:\|model:\|valid loss\|parity\|onnxruntime valid\|wrote\|exit\|Error\|Traceback" /tmp/out/$n/log | tail -25
  done
  ls -la "$OUT"
  echo "total $(($(date +%s) - T0)) s"
  ;;
*)
  echo "usage: bash models/train/gpu_run.sh prep|run" >&2
  exit 2
  ;;
esac
