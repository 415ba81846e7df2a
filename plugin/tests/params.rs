//! The parameter contract: every product.md parameter exists under its final ID, and every
//! parameter's text survives value → text → value → text (clap-validator's
//! `param-conversions` check, which once caught the attribute "auto" switches).
//!
//! Thread: test

use moodfader::params::MoodfaderParams;
use nice_plug::prelude::*;

/// The released IDs. Never change one of these; add new ones instead.
const RELEASED_IDS: &[&str] = &[
    "tgt_val", "tgt_aro", "steer",
    "ndens_v", "ndens_auto", "rdens_v", "rdens_auto", "dyn_v", "dyn_auto", "reg_v", "reg_auto",
    "range_v", "range_auto", "mode_v", "mode_auto", "artic_v", "artic_auto", "tens_v", "tens_auto",
    "cont_on", "trigger", "bars", "temp", "seed", "gen", "trig_note", "out_ch", "in_src", "preview",
    "thru", "mood_cc", "bypass",
];

#[test]
fn every_released_id_is_declared() {
    let params = MoodfaderParams::default();
    let ids: Vec<String> = params.param_map().into_iter().map(|(id, _, _)| id).collect();
    for id in RELEASED_IDS {
        assert!(ids.iter().any(|i| i == id), "parameter '{id}' is missing; declared: {ids:?}");
    }
    assert_eq!(ids.len(), RELEASED_IDS.len(), "a new parameter needs adding to RELEASED_IDS: {ids:?}");
}

#[test]
fn text_round_trips_for_every_parameter() {
    let params = MoodfaderParams::default();
    for (id, ptr, _) in params.param_map() {
        for normalized in [0.0f32, 0.1, 0.25, 0.4998, 0.5, 0.5002, 0.505_050_5, 0.75, 0.9, 1.0] {
            // SAFETY: `ptr` points into `params`, which outlives this loop.
            unsafe {
                let text = ptr.normalized_value_to_string(normalized, true);
                let back = ptr
                    .string_to_normalized_value(&text)
                    .unwrap_or_else(|| panic!("'{id}': text '{text}' does not parse back"));
                let again = ptr.normalized_value_to_string(back, true);
                assert_eq!(text, again, "'{id}' at {normalized}: '{text}' -> {back} -> '{again}'");
                let without_unit = ptr.normalized_value_to_string(normalized, false);
                assert!(ptr.string_to_normalized_value(&without_unit).is_some(), "'{id}': '{without_unit}' without unit does not parse");
            }
        }
    }
}
