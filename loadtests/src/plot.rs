//! Draws `latency.svg`: p50 and p99 per second above, throughput below, with
//! the run's swap, outage and spike windows shaded in both, so a latency
//! bump can be read against what the scenario was doing at the time.

use std::path::Path;

use plotters::prelude::*;

use crate::load::histogram::TimelinePoint;
use crate::summary::Window;

const SIZE: (u32, u32) = (1100, 700);

/// Shade per window kind; unknown kinds get grey.
fn shade(kind: &str) -> RGBAColor {
    match kind {
        "swap" => BLUE.mix(0.15),
        "outage" => RED.mix(0.15),
        "spike" => MAGENTA.mix(0.12),
        _ => BLACK.mix(0.08),
    }
}

/// Writes the chart to `path`.
pub fn draw(path: &Path, title: &str, points: &[TimelinePoint], windows: &[Window]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (top, bottom) = root.split_vertically(SIZE.1 * 3 / 5);
    let seconds = points.len().max(1) as f64;

    let max_latency = points.iter().map(|p| p.p99_ms).fold(1.0_f64, f64::max) * 1.1;
    let mut latency = ChartBuilder::on(&top)
        .caption(format!("{title}: latency by intended start (ms)"), ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..max_latency)
        .map_err(plot_error)?;
    latency.configure_mesh().x_desc("s").y_desc("ms").draw().map_err(plot_error)?;
    shade_windows(&mut latency, windows, max_latency)?;
    latency
        .draw_series(LineSeries::new(points.iter().map(|p| (p.second as f64, p.p50_ms)), &GREEN))
        .map_err(plot_error)?
        .label("p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    latency
        .draw_series(LineSeries::new(points.iter().map(|p| (p.second as f64, p.p99_ms)), &RED))
        .map_err(plot_error)?
        .label("p99")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    latency
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(plot_error)?;

    let max_rps = points.iter().map(|p| p.completed as f64).fold(1.0_f64, f64::max) * 1.1;
    let mut rps = ChartBuilder::on(&bottom)
        .caption("answers per second (errors in red)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(25)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds, 0.0..max_rps)
        .map_err(plot_error)?;
    rps.configure_mesh().x_desc("s").y_desc("rps").draw().map_err(plot_error)?;
    shade_windows(&mut rps, windows, max_rps)?;
    rps.draw_series(LineSeries::new(points.iter().map(|p| (p.second as f64, p.completed as f64)), &BLUE))
        .map_err(plot_error)?;
    rps.draw_series(LineSeries::new(points.iter().map(|p| (p.second as f64, p.errors as f64)), &RED))
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn shade_windows<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    windows: &[Window],
    top: f64,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .draw_series(windows.iter().map(|w| {
            // A swap can take milliseconds; widen it enough to be visible.
            let end = w.end_s.max(w.start_s + 0.2);
            Rectangle::new([(w.start_s, 0.0), (end, top)], shade(&w.kind).filled())
        }))
        .map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the chart: {err}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn writes_an_svg_with_both_panels() {
        let dir = std::env::temp_dir().join(format!("loadtest-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latency.svg");
        let points: Vec<TimelinePoint> = (0..10)
            .map(|s| TimelinePoint { second: s, completed: 50, errors: 0, p50_ms: 5.0, p99_ms: 20.0 + s as f64 })
            .collect();
        let windows = vec![Window { kind: "swap".into(), start_s: 3.0, end_s: 3.5 }];
        draw(&path, "smoke", &points, &windows).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("answers per second"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
