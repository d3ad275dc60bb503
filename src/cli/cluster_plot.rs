//! SVG plots of the clustering analyses (plotters): S0(t), S1(t) with t1/t2 (Algorithm 1, the paper's analysis
//! figures) and the similarity heat map with the chosen boundaries (Algorithm 2).

use std::path::Path;

use anyhow::anyhow;
use ndarray::Array2;
use plotters::prelude::*;

use crate::reference::cluster::optimal::{binned_means, Alg1Result};

fn plot_err(_tmp: &Path, e: impl std::fmt::Display) -> anyhow::Error {
    // The caller names the destination; the temporary path would only confuse.
    anyhow!("cannot draw the plot: {e}")
}

/// S0(t) and S1(t) (draws averaged in 100 bins of t), the cumulative criteria of Algorithm 1 lines 8–9
/// (mean S0 over t ≤ τ, mean S1 over t ≥ τ), the α line, and t1, t2.
pub fn plot_alg1(path: &Path, res: &Alg1Result, alpha: f64) -> anyhow::Result<()> {
    // Drawn into a temporary file renamed into place: a failed plot leaves nothing behind.
    Ok(crate::output::write_with(path, |tmp| {
        draw_alg1(tmp, res, alpha)
    })?)
}

fn draw_alg1(path: &Path, res: &Alg1Result, alpha: f64) -> anyhow::Result<()> {
    let (centers, s0, s1) = binned_means(&res.samples, 100);
    let mut sorted = res.samples.clone();
    sorted.sort_by(|a, b| a.t.total_cmp(&b.t));
    let k = sorted.len();
    let mut cum0 = Vec::with_capacity(k);
    let mut acc = 0.0;
    for (i, s) in sorted.iter().enumerate() {
        acc += s.s0;
        cum0.push((s.t, acc / (i + 1) as f64));
    }
    let mut cum1 = vec![(0.0, 0.0); k];
    acc = 0.0;
    for (i, s) in sorted.iter().enumerate().rev() {
        acc += s.s1;
        cum1[i] = (s.t, acc / (k - i) as f64);
    }
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Algorithm 1: similarity of eps*_t to its t->0 (S0) and t->1 (S1) limits",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1.02f64)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("t")
        .y_desc("similarity")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let series = |v: &[f64]| -> Vec<(f64, f64)> {
        centers
            .iter()
            .zip(v)
            .filter(|(_, y)| y.is_finite())
            .map(|(&x, &y)| (x, y))
            .collect()
    };
    let draw =
        |chart: &mut ChartContext<_, _>, pts: Vec<(f64, f64)>, style: ShapeStyle, label: &str| {
            chart
                .draw_series(LineSeries::new(pts, style))
                .map(|s| {
                    s.label(label.to_string())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                })
                .map_err(|e| plot_err(path, e))
        };
    draw(
        &mut chart,
        series(&s0),
        BLUE.stroke_width(2),
        "S0(t), 100 bins",
    )?;
    draw(
        &mut chart,
        series(&s1),
        RED.stroke_width(2),
        "S1(t), 100 bins",
    )?;
    draw(
        &mut chart,
        cum0,
        BLUE.mix(0.5).stroke_width(1),
        "mean S0 over t <= tau",
    )?;
    draw(
        &mut chart,
        cum1,
        RED.mix(0.5).stroke_width(1),
        "mean S1 over t >= tau",
    )?;
    draw(
        &mut chart,
        vec![(0.0, alpha), (1.0, alpha)],
        BLACK.mix(0.4).stroke_width(1),
        "alpha",
    )?;
    for (t, name, color) in [(res.t1, "t1", BLUE), (res.t2, "t2", RED)] {
        if let Some(t) = t {
            draw(
                &mut chart,
                vec![(t, 0.0), (t, 1.02)],
                color.stroke_width(1),
                &format!("{name} = {t:.4}"),
            )?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::MiddleRight)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}

/// Heat map of S(t_a, t_b) on the grid (each node drawn over its cell), with the boundaries as lines.
pub fn plot_alg2(
    path: &Path,
    sim: &Array2<f64>,
    grid: &[f64],
    boundaries: &[f64],
) -> anyhow::Result<()> {
    Ok(crate::output::write_with(path, |tmp| {
        draw_alg2(tmp, sim, grid, boundaries)
    })?)
}

fn draw_alg2(
    path: &Path,
    sim: &Array2<f64>,
    grid: &[f64],
    boundaries: &[f64],
) -> anyhow::Result<()> {
    let g = grid.len();
    let edges: Vec<f64> = (0..=g)
        .map(|i| match i {
            0 => 0.0,
            i if i == g => 1.0,
            i => 0.5 * (grid[i - 1] + grid[i]),
        })
        .collect();
    let root = SVGBackend::new(path, (700, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Algorithm 2: similarity S(t_a, t_b) and the chosen boundaries",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("t_a")
        .y_desc("t_b")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    // Greyscale: white = 0, black = 1.
    let cells = (0..g)
        .flat_map(|i| (0..g).map(move |j| (i, j)))
        .map(|(i, j)| {
            let v = (255.0 * (1.0 - sim[[i, j]].clamp(0.0, 1.0))).round() as u8;
            Rectangle::new(
                [(edges[i], edges[j]), (edges[i + 1], edges[j + 1])],
                RGBColor(v, v, v).filled(),
            )
        });
    chart.draw_series(cells).map_err(|e| plot_err(path, e))?;
    for &b in boundaries {
        chart
            .draw_series(LineSeries::new(
                vec![(b, 0.0), (b, 1.0)],
                RED.stroke_width(2),
            ))
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, b), (1.0, b)],
                RED.stroke_width(2),
            ))
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(())
}
