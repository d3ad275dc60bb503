//! `msd plot-metrics`: the loss of each stage of a training run against steps and against training FLOPs.

use std::fs;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use plotters::prelude::*;

/// Arguments of `msd plot-metrics`.
#[derive(Debug, Clone, Args)]
pub struct PlotMetricsArgs {
    /// The run directory (with metrics.jsonl).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The plot (.svg).
    #[arg(long, value_name = "FILE.svg")]
    pub out: PathBuf,
    /// Average the loss over windows of this many steps.
    #[arg(long, default_value_t = 20)]
    pub smooth: usize,
}

struct Row {
    step: f64,
    flops: f64,
    per_stage: Vec<Option<f64>>,
}

fn read(dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let p = dir.join("metrics.jsonl");
    let text = fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", p.display(), i + 1))?;
        if v["kind"] != "train" {
            continue;
        }
        let num = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| anyhow!("{} line {}: no number {k:?}", p.display(), i + 1))
        };
        let per = v["loss_per_stage"]
            .as_array()
            .ok_or_else(|| anyhow!("{} line {}: no loss_per_stage", p.display(), i + 1))?
            .iter()
            .map(|x| x.as_f64())
            .collect();
        rows.push(Row {
            step: num("step")?,
            flops: num("train_flops")?,
            per_stage: per,
        });
    }
    if rows.is_empty() {
        bail!("{}: no training lines to plot", p.display());
    }
    Ok(rows)
}

/// Per stage: windowed means of (x, loss) over the rows where the stage was trained.
fn series(rows: &[Row], k: usize, window: usize, x: impl Fn(&Row) -> f64) -> Vec<(f64, f64)> {
    let pts: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.per_stage.get(k).copied().flatten().map(|l| (x(r), l)))
        .collect();
    pts.chunks(window.max(1))
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

pub fn run(args: &PlotMetricsArgs) -> anyhow::Result<()> {
    match args.out.extension().and_then(|e| e.to_str()) {
        Some("svg") => {}
        Some("png") => bail!(
            "--out {}: PNG plots need a font rasteriser, which this build of msd does not include; write .svg",
            args.out.display()
        ),
        _ => bail!("--out {}: the plot must be a .svg file", args.out.display()),
    }
    let rows = read(&args.dir)?;
    let n = rows.iter().map(|r| r.per_stage.len()).max().unwrap_or(1);
    let path = &args.out;
    let err = |e: &dyn std::fmt::Display| anyhow!("{}: cannot write the plot: {e}", path.display());
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, 2));
    let ymax = rows
        .iter()
        .flat_map(|r| r.per_stage.iter().flatten())
        .fold(0.0f64, |a, &b| if b.is_finite() { a.max(b) } else { a });
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (pi, (panel, xlabel)) in panels.iter().zip(["step", "training FLOPs"]).enumerate() {
        let xf = |r: &Row| if pi == 0 { r.step } else { r.flops };
        let xmax = rows.iter().map(xf).fold(1e-9f64, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("loss per stage vs {xlabel}"), ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax, 0f64..(ymax * 1.05).max(1e-6))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc("loss")
            .draw()
            .map_err(|e| err(&e))?;
        for k in 0..n {
            let c = colors[k % colors.len()];
            chart
                .draw_series(LineSeries::new(
                    series(&rows, k, args.smooth, xf),
                    c.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(format!("stage {k}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
