//! Small dense linear algebra for the offline fits (evaluation and calibration commands).
//!
//! Thread: any offline caller (allocates; never the audio thread).

/// Solves `a · x = b` for square `a` by Gaussian elimination with partial pivoting. `None` when
/// `a` is singular (a pivot below 1e-12 in magnitude) or the solution is not finite.
pub fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let k = b.len();
    if a.len() != k || a.iter().any(|row| row.len() != k) {
        return None;
    }
    for c in 0..k {
        let p = (c..k).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        let (done, rest) = a.split_at_mut(c + 1);
        let pivot = &done[c];
        for (r, row) in rest.iter_mut().enumerate() {
            let f = row[c] / pivot[c];
            for (x, p) in row[c..].iter_mut().zip(&pivot[c..]) {
                *x -= f * p;
            }
            b[c + 1 + r] -= f * b[c];
        }
    }
    let mut x = vec![0.0f64; k];
    for r in (0..k).rev() {
        let s: f64 = (r + 1..k).map(|j| a[r][j] * x[j]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_refuses_singular_systems() {
        let x = solve(vec![vec![0.0, 2.0, 1.0], vec![1.0, 1.0, 0.0], vec![3.0, 0.0, 1.0]], vec![7.0, 3.0, 6.0]).expect("regular");
        for (got, want) in x.iter().zip([1.0, 2.0, 3.0]) {
            assert!((got - want).abs() < 1e-12, "{x:?}");
        }
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
        assert!(solve(vec![vec![1.0]], vec![1.0, 2.0]).is_none());
    }
}
