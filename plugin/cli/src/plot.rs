//! `moodfader analyze --plot`: the per-bar valence and arousal curves over time, on bands
//! coloured by each bar's quadrant of the circumplex (excited, tense, sad, calm), as a PNG.
//!
//! Thread: command line

use std::path::Path;
use std::sync::Once;

use anyhow::{Context, Result, anyhow};
use moodfader_engine::feel::analyze::Analysis;
use plotters::prelude::*;

/// Quadrant names and band colours, in the order of [`quadrant`].
pub const QUADRANTS: [(&str, RGBColor); 4] = [
    ("excited (V+ A+)", RGBColor(0xfd, 0xe6, 0xb8)),
    ("tense (V- A+)", RGBColor(0xf8, 0xc9, 0xc9)),
    ("sad (V- A-)", RGBColor(0xc9, 0xd6, 0xf2)),
    ("calm (V+ A-)", RGBColor(0xcd, 0xee, 0xd6)),
];
const VALENCE_COLOR: RGBColor = RGBColor(0x1f, 0x8a, 0x80);
const AROUSAL_COLOR: RGBColor = RGBColor(0xd9, 0x6c, 0x06);

/// Index into [`QUADRANTS`] for a valence/arousal pair.
pub fn quadrant(valence: f32, arousal: f32) -> usize {
    match (valence >= 0.0, arousal >= 0.0) {
        (true, true) => 0,
        (false, true) => 1,
        (false, false) => 2,
        (true, false) => 3,
    }
}

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|_| anyhow!("cannot load the plot font"));
    });
    result
}

/// Draws `analysis` of `title` into a PNG at `out` (written to a temporary file, then renamed).
pub fn plot_curve(analysis: &Analysis, title: &str, out: &Path) -> Result<()> {
    register_font()?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let tmp = dir.join(format!(".moodfader-plot-{}.png", std::process::id()));
    let drawn = draw(analysis, title, &tmp);
    let result = drawn.and_then(|()| std::fs::rename(&tmp, out).with_context(|| format!("{}: cannot write", out.display())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn draw(analysis: &Analysis, title: &str, path: &Path) -> Result<()> {
    let e = |err: DrawingAreaErrorKind<_>| anyhow!("plot: {err}");
    let bars = &analysis.bars;
    let end_s = match bars.len() {
        0 => 1.0,
        1 => bars[0].start_s + 1.0,
        n => bars[n - 1].start_s + (bars[n - 1].start_s - bars[n - 2].start_s).max(0.01),
    } as f32;
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f32..end_s, -1f32..1f32)
        .map_err(e)?;
    // Quadrant bands, one per bar.
    for (i, b) in bars.iter().enumerate() {
        let x1 = bars.get(i + 1).map_or(end_s, |n| n.start_s as f32);
        let color = QUADRANTS[quadrant(b.valence, b.arousal)].1;
        chart.draw_series(std::iter::once(Rectangle::new([(b.start_s as f32, -1.0), (x1, 1.0)], color.filled()))).map_err(e)?;
    }
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("valence / arousal")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(e)?;
    chart.draw_series(std::iter::once(PathElement::new(vec![(0.0, 0.0), (end_s, 0.0)], BLACK.mix(0.4)))).map_err(e)?;
    let curve = |f: fn(&moodfader_engine::feel::analyze::BarEstimate) -> f32| -> Vec<(f32, f32)> {
        bars.iter().map(|b| (b.start_s as f32, f(b))).collect()
    };
    chart
        .draw_series(LineSeries::new(curve(|b| b.valence), VALENCE_COLOR.stroke_width(3)))
        .map_err(e)?
        .label(format!("valence (overall {:+.2})", analysis.overall.valence))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], VALENCE_COLOR.stroke_width(3)));
    chart
        .draw_series(LineSeries::new(curve(|b| b.arousal), AROUSAL_COLOR.stroke_width(3)))
        .map_err(e)?
        .label(format!("arousal (overall {:+.2})", analysis.overall.arousal))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], AROUSAL_COLOR.stroke_width(3)));
    for (name, color) in QUADRANTS {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f32, f32)>>())
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use moodfader_engine::feel::analyze::{BarEstimate, Overall};

    #[test]
    fn quadrants_follow_the_circumplex() {
        assert_eq!(QUADRANTS[quadrant(0.5, 0.5)].0, "excited (V+ A+)");
        assert_eq!(QUADRANTS[quadrant(-0.5, 0.5)].0, "tense (V- A+)");
        assert_eq!(QUADRANTS[quadrant(-0.5, -0.5)].0, "sad (V- A-)");
        assert_eq!(QUADRANTS[quadrant(0.5, -0.5)].0, "calm (V+ A-)");
    }

    #[test]
    fn writes_a_png() {
        let bars = (0..12)
            .map(|i| BarEstimate { bar: i, start_s: i as f64 * 2.0, valence: (i as f32 * 0.5).sin(), arousal: (i as f32 * 0.3).cos() })
            .collect();
        let a = Analysis { bars, overall: Overall { valence: 0.1, arousal: -0.2 } };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("curve.png");
        plot_curve(&a, "test", &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 10_000, "a real picture, not an empty file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
