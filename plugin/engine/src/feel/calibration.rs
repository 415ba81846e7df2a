//! Personal calibration: a listener rates a few bars ("this feels like that to me") and the
//! estimator adapts to them with a per-listener affine map per dimension (offset and scale),
//! fitted by least squares shrunk toward "no change", so two or three bars cannot throw it far.
//! `evaluate_listeners` measures what it buys on VGMIDI's individual listener curves.
//!
//! Thread: any (the worker applies it; the command line fits and evaluates it)

use serde::{Deserialize, Serialize};

/// How many bars of evidence "no change" is worth (the shrinkage of the fit).
pub const PRIOR_BARS: f32 = 2.0;

/// `calibrated = offset + scale · estimate`, per dimension, clamped to [-1, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub valence: (f32, f32),
    pub arousal: (f32, f32),
}

impl Default for Calibration {
    fn default() -> Self {
        Self { valence: (0.0, 1.0), arousal: (0.0, 1.0) }
    }
}

/// Least squares of `y ≈ a + b·x` with a penalty `prior · ((b − 1)² + a²)` (shrinks toward the
/// identity). The scale stays in [0.25, 4]: a listener's curve is never read upside down.
fn fit_affine(x: &[f32], y: &[f32], prior: f32) -> (f32, f32) {
    let n = x.len().min(y.len());
    let pairs = || x.iter().zip(y).take(n).filter(|(a, b)| a.is_finite() && b.is_finite());
    let (mut sx, mut sy, mut sxx, mut sxy, mut m) = (0.0f64, 0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&a, &b) in pairs() {
        let (a, b) = (a as f64, b as f64);
        sx += a;
        sy += b;
        sxx += a * a;
        sxy += a * b;
        m += 1.0;
    }
    if m == 0.0 {
        return (0.0, 1.0);
    }
    let p = prior.max(0.0) as f64;
    // Normal equations of the penalised problem:
    // [m + p, sx; sx, sxx + p] [a; b] = [sy; sxy + p]
    let (a11, a12, a22) = (m + p, sx, sxx + p);
    let (r1, r2) = (sy, sxy + p);
    let det = a11 * a22 - a12 * a12;
    if det.abs() < 1e-12 {
        return (((sy - sx) / m) as f32, 1.0);
    }
    let b_free = (a11 * r2 - a12 * r1) / det;
    let b = b_free.clamp(0.25, 4.0);
    // The offset for that scale (same penalty on it): argmin Σ(y − a − b·x)² + p·a².
    let a = (sy - b * sx) / (m + p);
    (a as f32, b as f32)
}

impl Calibration {
    /// Fits from the model's estimates of some bars and the listener's ratings of the same bars.
    pub fn fit(estimates: &[(f32, f32)], ratings: &[(f32, f32)]) -> Calibration {
        let ev: Vec<f32> = estimates.iter().map(|e| e.0).collect();
        let ea: Vec<f32> = estimates.iter().map(|e| e.1).collect();
        let rv: Vec<f32> = ratings.iter().map(|r| r.0).collect();
        let ra: Vec<f32> = ratings.iter().map(|r| r.1).collect();
        Calibration { valence: fit_affine(&ev, &rv, PRIOR_BARS), arousal: fit_affine(&ea, &ra, PRIOR_BARS) }
    }

    pub fn apply(&self, (v, a): (f32, f32)) -> (f32, f32) {
        let f = |(o, s): (f32, f32), x: f32| if x.is_finite() { (o + s * x).clamp(-1.0, 1.0) } else { 0.0 };
        (f(self.valence, v), f(self.arousal, a))
    }
}

/// One listener's curve of one piece and the model's estimates for the same bars.
pub struct ListenerCurve {
    pub estimates: Vec<(f32, f32)>,
    pub ratings: Vec<(f32, f32)>,
}

/// Agreement of a curve with a listener's ratings.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Agreement {
    pub mae_valence: f64,
    pub mae_arousal: f64,
    pub ccc_valence: f64,
    pub ccc_arousal: f64,
}

/// Concordance correlation coefficient.
pub fn ccc(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let vx = x.iter().map(|a| (a - mx).powi(2)).sum::<f64>() / n;
    let vy = y.iter().map(|b| (b - my).powi(2)).sum::<f64>() / n;
    let cov = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum::<f64>() / n;
    let d = vx + vy + (mx - my).powi(2);
    if d <= 0.0 { 0.0 } else { 2.0 * cov / d }
}

/// Pooled agreement over many (prediction, rating) pairs.
pub fn agreement(pred: &[(f32, f32)], truth: &[(f32, f32)]) -> Agreement {
    let n = pred.len().min(truth.len()).max(1) as f64;
    let col = |v: &[(f32, f32)], k: usize| v.iter().map(|p| if k == 0 { p.0 as f64 } else { p.1 as f64 }).collect::<Vec<_>>();
    Agreement {
        mae_valence: pred.iter().zip(truth).map(|(p, t)| (p.0 - t.0).abs() as f64).sum::<f64>() / n,
        mae_arousal: pred.iter().zip(truth).map(|(p, t)| (p.1 - t.1).abs() as f64).sum::<f64>() / n,
        ccc_valence: ccc(&col(pred, 0), &col(truth, 0)),
        ccc_arousal: ccc(&col(pred, 1), &col(truth, 1)),
    }
}

/// What calibrating on the first `k` rated bars of a curve does to the agreement on the rest of
/// the same curve, pooled over every curve: (uncalibrated, calibrated, a baseline that holds the
/// listener's own mean of those `k` bars constant, number of curves).
pub fn evaluate_listeners(curves: &[ListenerCurve], k: usize) -> (Agreement, Agreement, Agreement, usize) {
    let (mut raw_p, mut cal_p, mut hold_p, mut truth) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut used = 0;
    for c in curves {
        let n = c.estimates.len().min(c.ratings.len());
        if n < k + 4 {
            continue;
        }
        used += 1;
        let cal = Calibration::fit(&c.estimates[..k], &c.ratings[..k]);
        let kf = k.max(1) as f32;
        let hold = (c.ratings[..k].iter().map(|r| r.0).sum::<f32>() / kf, c.ratings[..k].iter().map(|r| r.1).sum::<f32>() / kf);
        for t in k..n {
            raw_p.push(c.estimates[t]);
            cal_p.push(cal.apply(c.estimates[t]));
            hold_p.push(hold);
            truth.push(c.ratings[t]);
        }
    }
    (agreement(&raw_p, &truth), agreement(&cal_p, &truth), agreement(&hold_p, &truth), used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_an_offset_and_shrinks_with_little_evidence() {
        // A listener who hears everything 0.4 sadder.
        let est: Vec<(f32, f32)> = (0..20).map(|i| ((i as f32 / 10.0 - 1.0) * 0.5, 0.1)).collect();
        let rat: Vec<(f32, f32)> = est.iter().map(|e| (e.0 - 0.4, e.1)).collect();
        let c = Calibration::fit(&est, &rat);
        assert!((c.valence.0 + 0.4).abs() < 0.05 && (c.valence.1 - 1.0).abs() < 0.15, "{c:?}");
        // One bar of evidence moves the offset only part of the way.
        let one = Calibration::fit(&est[..1], &rat[..1]);
        assert!(one.valence.0 < 0.0 && one.valence.0 > -0.4, "{one:?}");
        // No evidence, or garbage, is no change.
        assert_eq!(Calibration::fit(&[], &[]), Calibration::default());
        let nan = Calibration::fit(&[(f32::NAN, 0.0)], &[(0.5, f32::NAN)]);
        assert!(nan.apply((0.3, 0.3)).0.is_finite());
        assert_eq!(Calibration::default().apply((0.3, -0.2)), (0.3, -0.2));
    }

    #[test]
    fn scale_never_flips() {
        let est: Vec<(f32, f32)> = (0..10).map(|i| (i as f32 / 10.0, i as f32 / 10.0)).collect();
        let rat: Vec<(f32, f32)> = est.iter().map(|e| (-e.0, -e.1)).collect();
        let c = Calibration::fit(&est, &rat);
        assert!(c.valence.1 >= 0.25 && c.arousal.1 >= 0.25);
    }
}
