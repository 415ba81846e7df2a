//! The token exporter on a small corpus made here (the real one needs the data set): one line per
//! piece and transposition, split by piece, attribute levels that follow the music, and token
//! sequences that decode back to the notes.
//!
//! Thread: test

use moodfader_engine::lab::export::export_tokens;
use moodfader_engine::listen::midifile::single_track_smf;
use moodfader_engine::play::tokens::{ATTRIBUTE_BASE, NUM_ATTRIBUTE_LEVELS, decode};

/// A 4-bar piece of eighth notes around `base` with velocity `vel`.
fn piece(base: u8, vel: u8) -> Vec<u8> {
    let mut ev: Vec<(u32, Vec<u8>)> = Vec::new();
    for i in 0..32u32 {
        let p = base + [0u8, 4, 7, 12][i as usize % 4];
        ev.push((if i == 0 { 0 } else { 40 }, vec![0x90, p, vel]));
        ev.push((200, vec![0x80, p, 0]));
    }
    single_track_smf(480, ev.iter().map(|(d, b)| (*d, b.as_slice())))
}

#[test]
fn exports_a_small_corpus() {
    let data = tempfile::tempdir().unwrap();
    for i in 1..=12 {
        let dir = data.path().join(format!("pop909/{i:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{i:03}.mid")), piece(40 + i as u8 * 3, 30 + i as u8 * 8)).unwrap();
    }
    std::fs::create_dir_all(data.path().join("vgmidi/unlabelled")).unwrap();
    std::fs::write(data.path().join("vgmidi/unlabelled/broken.mid"), b"not midi").unwrap();
    let out = data.path().join("tokens.jsonl");
    let report = export_tokens(data.path(), &out, &[0, 5]).unwrap();
    assert_eq!(report.num_pieces, 12);
    assert_eq!(report.skipped.len(), 1, "the broken file is reported, not fatal");
    assert_eq!(report.num_sequences, 24);
    assert_eq!(report.num_valid_pieces, 2, "every tenth piece is validation");

    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 24);
    let dynamics_level = |line: &serde_json::Value| -> u32 {
        // The third attribute token of the first bar is dynamics.
        let tokens: Vec<u32> = line["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        let attrs: Vec<u32> = tokens.iter().copied().filter(|&t| t >= ATTRIBUTE_BASE).take(8).collect();
        (attrs[2] - ATTRIBUTE_BASE) % NUM_ATTRIBUTE_LEVELS
    };
    let softest = lines.iter().find(|l| l["piece"] == "pop909/001/001.mid" && l["transpose"] == 0).unwrap();
    let loudest = lines.iter().find(|l| l["piece"] == "pop909/012/012.mid" && l["transpose"] == 0).unwrap();
    assert!(dynamics_level(softest) < dynamics_level(loudest));
    for l in &lines {
        let tokens: Vec<u32> = l["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
        assert_eq!(decode(&tokens, usize::MAX).len(), 32, "every note decodes back");
    }
    let side: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.path().join("tokens.jsonl.json")).unwrap()).unwrap();
    assert_eq!(side["attributes"][0], "note-density");
    assert_eq!(side["attribute_scale"]["p5"].as_array().unwrap().len(), 8);
}

/// A performed clip: `bars` bars at `bpm` with a one-beat pickup, written in a file that says
/// 120 BPM (as EMOPIA's do), bass on the downbeats, chords on 2 and 4, eighth-note melody.
fn performed_clip(bpm: f64, bars: u32) -> Vec<u8> {
    let tick_s = 0.5 / 480.0; // 120 BPM in the file
    let beat = 60.0 / bpm;
    let mut ev: Vec<(f64, Vec<u8>)> = Vec::new();
    let mut note = |t: f64, p: u8, v: u8, d: f64| {
        ev.push((t, vec![0x90, p, v]));
        ev.push((t + d, vec![0x80, p, 0]));
    };
    let first = 0.4 + beat;
    note(first - beat, 74, 60, beat * 0.8);
    for b in 0..bars {
        let t = first + (b * 4) as f64 * beat;
        let root = [36u8, 41, 43, 38][b as usize % 4];
        note(t, root, 90, beat * 3.5);
        for k in [1.0, 3.0] {
            for off in [12u8, 16, 19] {
                note(t + k * beat, root + off, 55, beat * 0.8);
            }
        }
        for e in 0..8 {
            note(t + e as f64 * beat / 2.0, 72 + ((b * 3 + e * 5) % 7) as u8, 70, beat * 0.45);
        }
    }
    ev.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1[0].cmp(&b.1[0])));
    let mut last = 0u32;
    let events: Vec<(u32, Vec<u8>)> = ev
        .into_iter()
        .map(|(t, b)| {
            let tick = (t / tick_s).round() as u32;
            let d = tick - last;
            last = tick;
            (d, b)
        })
        .collect();
    single_track_smf(480, events.iter().map(|(d, b)| (*d, b.as_slice())))
}

#[test]
fn new_data_sets_keep_the_old_split_and_emopia_splits_by_song_on_its_own_grid() {
    use moodfader_engine::lab::export::{continuation_corpus, read_corpus_piece};
    let data = tempfile::tempdir().unwrap();
    for i in 1..=21 {
        let dir = data.path().join(format!("pop909/{i:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{i:03}.mid")), piece(40 + i as u8, 60)).unwrap();
    }
    let before: Vec<(String, bool)> = continuation_corpus(data.path()).into_iter().map(|e| (e.id, e.valid)).collect();
    assert_eq!(before.iter().filter(|e| e.1).count(), 3, "every tenth piece");

    std::fs::create_dir_all(data.path().join("emopia/midi")).unwrap();
    for s in 0..12 {
        for c in 0..3 {
            // Song ids may hold underscores; the clip number is the last part.
            let name = format!("Q{}_song_{s:02}_{c}.mid", 1 + s % 4);
            std::fs::write(data.path().join("emopia/midi").join(name), performed_clip(84.0 + s as f64 * 3.0, 6)).unwrap();
        }
    }
    std::fs::create_dir_all(data.path().join("pop1k7/src_001")).unwrap();
    for i in 0..10 {
        std::fs::write(data.path().join(format!("pop1k7/src_001/{i}.mid")), piece(50 + i as u8, 70)).unwrap();
    }
    let corpus = continuation_corpus(data.path());
    let after: Vec<(String, bool)> = corpus.iter().filter(|e| e.id.starts_with("pop909/")).map(|e| (e.id.clone(), e.valid)).collect();
    assert_eq!(before, after, "adding data sets moved a POP909 piece across the split");

    let emopia: Vec<_> = corpus.iter().filter(|e| e.id.starts_with("emopia/")).collect();
    assert_eq!(emopia.len(), 36);
    assert!(emopia.iter().all(|e| e.free_time));
    for e in &emopia {
        let song = e.group.clone();
        assert!(song.starts_with("emopia/song_"), "{}", e.group);
        assert!(emopia.iter().filter(|o| o.group == song).all(|o| o.valid == e.valid), "song {song} on both sides");
    }
    let valid_songs: std::collections::HashSet<_> = emopia.iter().filter(|e| e.valid).map(|e| &e.group).collect();
    assert_eq!(valid_songs.len(), 2, "every tenth of 12 songs");
    assert_eq!(corpus.iter().filter(|e| e.id.starts_with("pop1k7/") && e.valid).count(), 1);

    // A clip played at 84 BPM in a 120 BPM file is read at 84 BPM, its bass on the bar lines.
    let clip = emopia.iter().find(|e| e.id.contains("song_00_0")).unwrap();
    let piece = read_corpus_piece(clip).unwrap();
    let bpm = piece.bars[0].tempo_bpm;
    assert!((bpm / 84.0 - 1.0).abs() < 0.02, "tempo {bpm:.1}");
    assert!(piece.bars.len() >= 6 && piece.bars.len() <= 8, "{} bars", piece.bars.len());
    for n in piece.notes.iter().filter(|n| n.pitch < 48) {
        let x = n.onset_beats / 4.0;
        assert!((x - x.round()).abs() * 4.0 < 0.1, "bass note at beat {:.2}", n.onset_beats);
    }
    // The file's own grid (120 BPM) would not have put them there.
    let raw = moodfader_engine::listen::midifile::read_midi_file(&clip.path).unwrap();
    assert!((raw.bars[0].tempo_bpm - 120.0).abs() < 1e-6);

    // A POP909 song takes its bars from its beat_midi.txt (downbeats in the third column), here
    // half a beat after the file's beat 1; one without the file keeps the file's grid.
    let beats: String = (0..16).map(|i| format!("{:.2} {} {}\n", 0.25 + 0.5 * i as f64, (i % 2 == 0) as u8, (i % 4 == 0) as u8)).collect();
    std::fs::write(data.path().join("pop909/001/beat_midi.txt"), beats).unwrap();
    let song = |id: &str| corpus.iter().find(|e| e.id == id).unwrap();
    let annotated = read_corpus_piece(song("pop909/001/001.mid")).unwrap();
    assert!((annotated.bars[0].len_beats - 0.5).abs() < 1e-9, "pickup bar");
    assert!((annotated.bars[1].start_s - 0.25).abs() < 1e-9 && (annotated.bars[1].len_beats - 4.0).abs() < 1e-9);
    let plain = read_corpus_piece(song("pop909/002/002.mid")).unwrap();
    assert_eq!(plain.bars[1].start_beats, 4.0);
    std::fs::write(data.path().join("pop909/001/beat_midi.txt"), "0.25 1 one\n").unwrap();
    let err = read_corpus_piece(song("pop909/001/001.mid")).unwrap_err();
    assert!(format!("{err:#}").contains("beat_midi.txt:1: not three numbers"), "{err:#}");
}
