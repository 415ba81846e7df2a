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
