//! Key and mode from a pitch-class histogram, with the Krumhansl–Kessler key profiles (the
//! Krumhansl–Schmuckler method): correlate the histogram with the 24 rotated profiles.
//!
//! Thread: any (allocation-free)

const MAJOR_PROFILE: [f32; 12] = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88];
const MINOR_PROFILE: [f32; 12] = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17];

/// The result of key finding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyEstimate {
    /// Tonic pitch class, 0 = C.
    pub tonic: u8,
    pub is_major: bool,
    /// Best major correlation minus best minor correlation, in [-2, 2]: > 0 leans major.
    pub mode: f32,
    /// Correlation of the winning key, in [-1, 1]; 0 when there is nothing to go on.
    pub clarity: f32,
}

impl KeyEstimate {
    pub const NONE: KeyEstimate = KeyEstimate { tonic: 0, is_major: true, mode: 0.0, clarity: 0.0 };
}

fn pearson(a: &[f32; 12], b: &[f32; 12], rot: usize) -> f32 {
    let mean_a = a.iter().sum::<f32>() / 12.0;
    let mean_b = b.iter().sum::<f32>() / 12.0;
    let (mut num, mut da, mut db) = (0.0f32, 0.0f32, 0.0f32);
    for pc in 0..12 {
        let x = a[pc] - mean_a;
        let y = b[(pc + 12 - rot) % 12] - mean_b;
        num += x * y;
        da += x * x;
        db += y * y;
    }
    if da <= 1e-12 || db <= 1e-12 { 0.0 } else { num / (da.sqrt() * db.sqrt()) }
}

/// Finds the best-fitting key for a duration-weighted pitch-class histogram.
pub fn find_key(hist: &[f32; 12]) -> KeyEstimate {
    let total: f32 = hist.iter().sum();
    // NaN totals fall through to NONE too.
    if total.partial_cmp(&1e-9) != Some(std::cmp::Ordering::Greater) {
        return KeyEstimate::NONE;
    }
    let (mut best_major, mut best_major_tonic) = (f32::MIN, 0usize);
    let (mut best_minor, mut best_minor_tonic) = (f32::MIN, 0usize);
    for tonic in 0..12 {
        let r_major = pearson(hist, &MAJOR_PROFILE, tonic);
        if r_major > best_major {
            best_major = r_major;
            best_major_tonic = tonic;
        }
        let r_minor = pearson(hist, &MINOR_PROFILE, tonic);
        if r_minor > best_minor {
            best_minor = r_minor;
            best_minor_tonic = tonic;
        }
    }
    let is_major = best_major >= best_minor;
    KeyEstimate {
        tonic: if is_major { best_major_tonic } else { best_minor_tonic } as u8,
        is_major,
        mode: best_major - best_minor,
        clarity: best_major.max(best_minor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(pcs: &[usize]) -> [f32; 12] {
        let mut h = [0.0; 12];
        for &pc in pcs {
            h[pc % 12] += 1.0;
        }
        h
    }

    #[test]
    fn c_major_scale_is_c_major() {
        let k = find_key(&hist_of(&[0, 2, 4, 5, 7, 9, 11, 0, 4, 7]));
        assert_eq!((k.tonic, k.is_major), (0, true));
        assert!(k.mode > 0.0 && k.clarity > 0.7, "{k:?}");
    }

    #[test]
    fn a_minor_triads_are_a_minor() {
        let k = find_key(&hist_of(&[9, 0, 4, 9, 0, 4, 2, 5, 9, 4, 8, 11]));
        assert_eq!((k.tonic, k.is_major), (9, false), "{k:?}");
        assert!(k.mode < 0.0);
    }

    #[test]
    fn empty_histogram_is_neutral() {
        assert_eq!(find_key(&[0.0; 12]), KeyEstimate::NONE);
    }
}
