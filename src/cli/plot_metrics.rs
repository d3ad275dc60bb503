//! `msd plot-metrics`: the loss of each stage of a training run against steps and against training FLOPs.
//!
//! The plot is drawn once as SVG (plotters); a `.png` is that SVG rasterised by resvg, with the sans-serif
//! text set in a font found on the system (a machine without fonts gets the plot without its text, and a
//! warning).

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
    /// The plot: FILE.svg, or FILE.png (1000 x 420 pixels). Written through a temporary file.
    #[arg(long, value_name = "FILE.png|svg")]
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

/// Plot width and height (SVG units = PNG pixels).
pub const SIZE: (u32, u32) = (1000, 420);

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Svg,
    Png,
}

pub fn run(args: &PlotMetricsArgs) -> anyhow::Result<()> {
    let format = match args
        .out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => Format::Svg,
        Some("png") => Format::Png,
        _ => bail!(
            "--out {}: the plot must be a .svg or .png file",
            args.out.display()
        ),
    };
    crate::output::check(&args.out).context("--out")?;
    let rows = read(&args.dir)?;
    let svg = draw(&rows, args.smooth)?;
    let path = &args.out;
    match format {
        Format::Svg => crate::output::write_with(path, |t| std::fs::write(t, svg.as_bytes()))?,
        Format::Png => {
            let (img, fonts) = rasterise(&svg)?;
            if !fonts {
                eprintln!("warning: no fonts found on this system: the PNG has no text (write .svg for a labelled plot)");
            }
            crate::output::write_with(path, |t| img.save_with_format(t, image::ImageFormat::Png))?
        }
    }
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// A sans-serif family the font database holds (well-known ones first), if any.
fn sans_family(db: &resvg::usvg::fontdb::Database) -> Option<String> {
    let families: Vec<&str> = db
        .faces()
        .flat_map(|f| f.families.iter().map(|(name, _)| name.as_str()))
        .collect();
    [
        "DejaVu Sans",
        "Liberation Sans",
        "Arial",
        "Helvetica",
        "Noto Sans",
    ]
    .iter()
    .find(|want| families.contains(want))
    .map(|s| s.to_string())
    .or_else(|| families.first().map(|s| s.to_string()))
}

/// Rasterises the plot's SVG on a white background. Returns the image and whether a font was found.
fn rasterise(svg: &str) -> anyhow::Result<(image::RgbImage, bool)> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    let family = sans_family(db);
    if let Some(f) = &family {
        db.set_sans_serif_family(f.clone());
        opt.font_family = f.clone();
    }
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| anyhow!("the plot's SVG: {e}"))?;
    let (w, h) = SIZE;
    let mut pixmap = tiny_skia::Pixmap::new(w, h).expect("non-zero size");
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    // Opaque everywhere (white background), so the premultiplied RGBA is plain RGB.
    let rgb: Vec<u8> = pixmap
        .data()
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    let img = image::RgbImage::from_raw(w, h, rgb).expect("w*h*3 bytes");
    Ok((img, family.is_some()))
}

/// The plot as SVG text: loss per stage against steps (left) and training FLOPs (right).
fn draw(rows: &[Row], smooth: usize) -> anyhow::Result<String> {
    let n = rows.iter().map(|r| r.per_stage.len()).max().unwrap_or(1);
    let err = |e: &dyn std::fmt::Display| anyhow!("cannot draw the plot: {e}");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
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
            // FLOPs reach 1e15 and more: scientific labels keep them apart.
            let sci = |v: &f64| format!("{v:.1e}");
            let plain = |v: &f64| format!("{v}");
            chart
                .configure_mesh()
                .x_label_formatter(if pi == 0 { &plain } else { &sci })
                .x_desc(xlabel)
                .y_desc("loss")
                .draw()
                .map_err(|e| err(&e))?;
            for k in 0..n {
                let c = colors[k % colors.len()];
                chart
                    .draw_series(LineSeries::new(
                        series(rows, k, smooth, xf),
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
    }
    Ok(svg)
}
