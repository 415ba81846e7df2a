"""The VST3 in two JUCE-based hosts from PyPI, as a producer's DAW would run it.

DawDreamer (renders offline, faster than real time, as a DAW bounces):
  * at most 64 parameters (VST3 MIDI-CC proxies for the sustain pedal only);
  * audio passes bit-exact with the continuation off;
  * Follow mode with the preview voice: a two-bar primer played to the plugin as MIDI from the
    second bar, then silence; the render holds the continuation's preview audio in every second
    after the primer (it used to be all zeros), none in the first bar (Follow mode starts at a
    bar line), and the same render twice is the same to the bit;
  * the same session without the primer renders other music after it: the heard notes reach
    the plugin and steer what it plays;
  * a saved state loads into a fresh instance with every parameter as set.
pedalboard: loads the VST3 in under 2 s.

DawDreamer cannot route a plugin's MIDI output (DBraun/DawDreamer#194), so MIDI thru and
sample-exact generated MIDI are checked by the clack-host tests, live and offline.

Usage: python check_dawdreamer.py path/to/moodfader.vst3 [--json out.json]
Thread: none (a test script; `cargo xtask daw` runs it)
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

SR = 48_000
BLOCK = 512
BPM = 240.0  # a bar per second
MAX_PARAMS = 64
MAX_LOAD_S = 2.0


def fail(failures, msg):
    failures.append(msg)
    print(f"check_dawdreamer: FAIL {msg}", file=sys.stderr)


def params_by_name(proc):
    return {d["name"]: d["index"] for d in proc.get_parameters_description()}


def follow_session(dd, path, primer):
    """Renders 10 s of Follow mode with the preview voice; `primer`: play two bars from 1 s."""
    engine = dd.RenderEngine(SR, BLOCK)
    engine.set_bpm(BPM)
    proc = engine.make_plugin_processor("moodfader", path)
    names = params_by_name(proc)
    proc.set_parameter(names["Continuation"], 1.0)
    proc.set_parameter(names["Trigger"], 0.5)  # On demand, Follow, Call and response
    proc.set_parameter(names["Preview voice"], 1.0)
    assert proc.get_parameter_text(names["Trigger"]) == "Follow", proc.get_parameter_text(names["Trigger"])
    if primer:
        pitches = [60, 64, 67, 72, 67, 64, 62, 59]
        for k in range(16):
            proc.add_midi_note(pitches[k % 8], 90, 1.0 + k * 0.125, 0.11)
    engine.load_graph([(proc, [])])
    t0 = time.perf_counter()
    engine.render(10.0)
    took = time.perf_counter() - t0
    return np.asarray(proc.get_audio(), dtype=np.float32), took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vst3")
    ap.add_argument("--json")
    args = ap.parse_args()
    path = os.path.abspath(args.vst3)
    import dawdreamer as dd
    import pedalboard

    failures = []
    report = {"dawdreamer": dd.__version__ if hasattr(dd, "__version__") else "?", "pedalboard": pedalboard.__version__}

    t0 = time.perf_counter()
    pb = pedalboard.load_plugin(path)
    report["pedalboard_load_s"] = round(time.perf_counter() - t0, 3)
    report["pedalboard_params"] = len(pb.parameters)
    del pb
    if report["pedalboard_load_s"] >= MAX_LOAD_S:
        fail(failures, f"pedalboard took {report['pedalboard_load_s']} s to load the VST3 (bar {MAX_LOAD_S} s)")

    # Parameters, and audio through with the continuation off.
    engine = dd.RenderEngine(SR, BLOCK)
    engine.set_bpm(BPM)
    rng = np.random.default_rng(7)
    audio_in = (0.25 * rng.standard_normal((2, 2 * SR))).astype(np.float32)
    player = engine.make_playback_processor("input", audio_in)
    proc = engine.make_plugin_processor("moodfader", path)
    report["dawdreamer_params"] = proc.get_plugin_parameter_size()
    if report["dawdreamer_params"] > MAX_PARAMS:
        fail(failures, f"DawDreamer sees {report['dawdreamer_params']} parameters (bar {MAX_PARAMS})")
    engine.load_graph([(player, []), (proc, ["input"])])
    engine.render(2.0)
    out = np.asarray(proc.get_audio(), dtype=np.float32)
    n = min(out.shape[1], audio_in.shape[1])
    if out.shape[0] != 2 or not np.array_equal(out[:, :n].view(np.uint32), audio_in[:, :n].view(np.uint32)):
        diff = np.abs(out[:, :n] - audio_in[:, :n]).max() if out.shape[0] == 2 else float("nan")
        fail(failures, f"audio does not pass bit-exact (max |diff| {diff})")

    # Follow mode, offline.
    a, took_a = follow_session(dd, path, primer=True)
    b, _ = follow_session(dd, path, primer=False)
    a2, _ = follow_session(dd, path, primer=True)
    report["follow_render_s_for_10_s"] = round(took_a, 3)
    peak = lambda x, t0, t1: float(np.abs(x[:, int(t0 * SR):int(t1 * SR)]).max())
    report["follow_peak_before_primer"] = peak(a, 0.0, 1.0)
    report["follow_peak_after_primer"] = peak(a, 3.5, 10.0)
    report["follow_seconds_with_sound_after_primer"] = sum(peak(a, t, t + 1) > 0.01 for t in range(3, 10))
    report["no_primer_differs_after_primer"] = not np.array_equal(a[:, 3 * SR:], b[:, 3 * SR:])
    if report["follow_peak_before_primer"] != 0.0:
        fail(failures, f"sound in the first bar, before Follow mode's first bar line (peak {report['follow_peak_before_primer']})")
    if report["follow_seconds_with_sound_after_primer"] < 5:
        fail(failures, f"the offline render holds the continuation in only {report['follow_seconds_with_sound_after_primer']} of the 7 s after the primer")
    if not report["no_primer_differs_after_primer"]:
        fail(failures, "the render without the primer is the same as with it: the heard MIDI did not reach the plugin")
    if not np.array_equal(a.view(np.uint32), a2.view(np.uint32)):
        fail(failures, "two offline renders of the same session differ")

    # A saved state comes back in a fresh instance.
    engine = dd.RenderEngine(SR, BLOCK)
    proc = engine.make_plugin_processor("moodfader", path)
    names = params_by_name(proc)
    wanted = {"Target valence": 0.8, "Steer": 0.9, "Continuation": 1.0, "Trigger": 1.0, "Preview voice": 1.0, "Seed": 0.5, "Dynamics auto": 0.0, "Dynamics": 0.25}
    for k, v in wanted.items():
        proc.set_parameter(names[k], v)
    engine.load_graph([(proc, [])])
    engine.render(0.1)
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "moodfader.state")
        proc.save_state(state)
        engine2 = dd.RenderEngine(SR, BLOCK)
        proc2 = engine2.make_plugin_processor("moodfader2", path)
        proc2.load_state(state)
        engine2.load_graph([(proc2, [])])
        engine2.render(0.1)
        back = {k: proc2.get_parameter_text(names[k]) for k in wanted}
    report["state_reload"] = back
    for k in wanted:
        was = proc.get_parameter_text(names[k])
        if back[k] != was:
            fail(failures, f"after reloading the state, {k} reads {back[k]!r}, was {was!r}")

    report["failures"] = failures
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if failures:
        sys.exit(f"check_dawdreamer: {len(failures)} check(s) failed")
    print("check_dawdreamer: all checks passed")


if __name__ == "__main__":
    main()
