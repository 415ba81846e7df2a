"""Writes assets/demo.mid: a 24-bar piano sketch in three moods, made for Moodfader's demo.

Bars 1-8: calm, soft, slow-moving C major arpeggios (calm / content).
Bars 9-16: tense, loud, dense A minor with chromatic clusters (tense / angry).
Bars 17-24: bright, fast, loud G major melody over bouncing chords (excited / happy).
It is our own material (no data set), so the demo runs from the repository alone.
Run: python3 assets/make_demo.py  (needs `pip install mido`)

Thread: main (an offline script)
"""
import mido

TPQ = 480
mid = mido.MidiFile(ticks_per_beat=TPQ)
tr = mido.MidiTrack()
mid.tracks.append(tr)
tr.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
tr.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(80), time=0))
events = []  # (tick, on, pitch, vel)


def note(start_beats, dur_beats, pitch, vel):
    s = int(round(start_beats * TPQ))
    e = int(round((start_beats + dur_beats) * TPQ))
    events.append((s, 1, pitch, vel))
    events.append((e, 0, pitch, 0))


# Calm: C major, sparse legato half-note arpeggios, soft.
calm = [[48, 55, 64], [45, 52, 60], [41, 48, 57], [43, 50, 59]]
for bar in range(8):
    chord = calm[bar % 4]
    for i, p in enumerate(chord):
        note(bar * 4 + i * 1.33, 4 - i * 1.33, p, 42 + i * 4)
    note(bar * 4 + 2, 2, chord[-1] + 12, 48)

# Tense: A minor, dense 8ths, clusters, loud, low register.
tense = [[45, 46, 52, 53], [44, 50, 53, 56], [45, 48, 51, 54], [40, 46, 52, 58]]
for bar in range(8, 16):
    chord = tense[bar % 4]
    for k in range(8):
        b = bar * 4 + k * 0.5
        note(b, 0.3, chord[0] - 12 + (k % 2) * 12, 100 + (k % 3) * 8)
        if k % 2 == 0:
            for p in chord[1:]:
                note(b, 0.4, p, 96)

# Excited: G major, fast 16th melody, high and loud, staccato chords.
scale = [67, 71, 74, 79, 78, 74, 76, 72, 71, 74, 79, 83, 81, 79, 78, 76]
for bar in range(16, 24):
    for k in range(16):
        note(bar * 4 + k * 0.25, 0.2, scale[(k + bar) % 16] + 12 * (k % 4 == 0), 108 + (k % 2) * 10)
    for beat in range(4):
        root = [55, 60, 62, 55][(bar + beat) % 4]
        for p in (root, root + 4, root + 7):
            note(bar * 4 + beat, 0.25, p, 100)

# Tempo rises for the third section (tempo changes are part of the demo).
tempo_changes = {16 * 4 * TPQ: 150, 8 * 4 * TPQ: 112}
for t, bpm in tempo_changes.items():
    events.append((t, -1, bpm, 0))
events.sort(key=lambda e: (e[0], e[1] if e[1] >= 0 else -2))
last = 0
for t, kind, a, b in events:
    dt = t - last
    last = t
    if kind == -1:
        tr.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(a), time=dt))
    else:
        tr.append(mido.Message("note_on", note=a, velocity=b if kind else 0, time=dt))
mid.save("demo.mid")
print("wrote demo.mid")
