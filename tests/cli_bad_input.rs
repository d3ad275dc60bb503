//! The bad-input table: per subcommand, inputs a hostile user might give, each answered with a non-zero
//! exit, exactly one stderr line naming the problem (and the option or file), no panic, nothing left in the
//! working folder, within a small memory and time limit (each run gets `RLIMIT_AS` of [`MEM`]: an input
//! that makes msd allocate what a header declares, or read a device to its end, fails the test).

mod common;
use common::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ndarray::{array, Array2, Array3};
// Every test binary must link OpenBLAS (see src/lib.rs).
use ndarray_linalg as _;

/// Address space of one run: enough for msd's own start (BLAS and rayon thread stacks) and the small
/// inputs here, far below what any of the bad inputs declares.
const MEM: u64 = 1536 << 20;
const TIME: Duration = Duration::from_secs(60);

/// A `.npy` (version 1) with the given header dict and data bytes.
fn raw_npy(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut header = dict.to_string();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

/// A `.npz` whose members are the given raw `.npy` bytes (stored, or deflated).
fn raw_npz(path: &Path, members: &[(&str, Vec<u8>)], deflate: bool) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    });
    for (name, bytes) in members {
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn stats_npz(path: &Path, mu: &ndarray::Array1<f64>, sigma: &Array2<f64>) {
    let mut w = ndarray_npy::NpzWriter::new(std::fs::File::create(path).unwrap());
    w.add_array("mu", mu).unwrap();
    w.add_array("sigma", sigma).unwrap();
    w.finish().unwrap();
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// The working folder of the table: every input file, and nothing else after any run.
struct Fixture {
    dir: tempfile::TempDir,
    inputs: Vec<String>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            inputs: vec![],
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn file(&mut self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        self.inputs.push(name.to_string());
        p.to_str().unwrap().to_string()
    }

    fn npy(&mut self, name: &str, a: &Array2<f64>) -> String {
        write_npy(self.dir.path(), name, a);
        self.inputs.push(name.to_string());
        self.path(name).to_str().unwrap().to_string()
    }

    fn mkdir(&mut self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        self.inputs.push(name.to_string());
        p
    }

    fn link(&mut self, name: &str, target: &Path) -> String {
        let p = self.path(name);
        std::os::unix::fs::symlink(target, &p).unwrap();
        self.inputs.push(name.to_string());
        p.to_str().unwrap().to_string()
    }

    fn out(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// Runs every row: a clean one-line error naming `needle`, within the limits, nothing left behind.
    fn check(&self, rows: &[(Vec<String>, &str)], env: &[(&str, &Path)]) {
        for (args, needle) in rows {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut run = Run::new(&args).limits(MEM, TIME);
            for (k, v) in env {
                run = run.env(k, v);
            }
            let o = run.output();
            let err = stderr(&o);
            assert!(
                !err.contains("os error 2): No such file") && err.matches("(os error").count() <= 1,
                "msd {args:?}: repeated OS error: {err}"
            );
            assert!(!err.contains("Some("), "msd {args:?}: Debug text: {err}");
            assert!(
                !err.as_bytes()
                    .windows(25)
                    .any(|w| w.iter().all(u8::is_ascii_digit)),
                "msd {args:?}: a number of 25+ digits: {err}"
            );
            std::panic::catch_unwind(|| assert_clean_error(&o, needle))
                .unwrap_or_else(|_| panic!("msd {args:?}"));
            let names: Vec<&str> = self.inputs.iter().map(String::as_str).collect();
            assert_only_files(self.dir.path(), &names);
        }
    }
}

fn row(args: &[&str], needle: &'static str) -> (Vec<String>, &'static str) {
    (args.iter().map(|s| s.to_string()).collect(), needle)
}

macro_rules! rows {
    ($( [$($a:expr),* $(,)?] => $needle:expr ),* $(,)?) => {
        vec![$( ( vec![$($a.to_string()),*], $needle ) ),*]
    };
}

#[test]
fn npy_inputs_of_every_command() {
    let mut f = Fixture::new();
    let data = f.npy("d.npy", &array![[0.0, 1.0], [1.0, 0.0]]);
    let x = f.npy("x.npy", &array![[0.5, 0.5]]);
    // A 228-byte file whose header declares 10^12 x 784 float64 (6.3 PB).
    let huge = f.file(
        "huge.npy",
        &raw_npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 784), }",
            &[0; 64],
        ),
    );
    // Overflowing shape product.
    let wrap = f.file(
        "wrap.npy",
        &raw_npy(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
            &[],
        ),
    );
    // Version 2 header that declares a 4 GB header.
    let mut big_header = b"\x93NUMPY\x02\x00".to_vec();
    big_header.extend_from_slice(&u32::MAX.to_le_bytes());
    big_header.extend_from_slice(b"{'descr'");
    let bighdr = f.file("bighdr.npy", &big_header);
    let empty = f.file("empty.npy", b"");
    let deep = f.file(
        "deep.npy",
        &raw_npy(&format!("{}{}", "(".repeat(5000), ")".repeat(5000)), &[]),
    );
    let ints = f.file(
        "ints.npy",
        &raw_npy(
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 2), }",
            &[0; 8],
        ),
    );
    let out = f.out("out.npy");
    let denoise = |d: &str, xq: &str| {
        vec![
            "denoise",
            "--data",
            d,
            "--x",
            xq,
            "--t",
            "0.5",
            "--schedule",
            "vp-linear",
            "--out",
            &out,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let mut rows = vec![
        (
            denoise(&huge, &x),
            "huge.npy: the header declares shape [1000000000000, 784]",
        ),
        (denoise(&wrap, &x), "wrap.npy: the header declares shape"),
        (
            denoise(&bighdr, &x),
            "bighdr.npy: malformed .npy header: header length",
        ),
        (denoise(&empty, &x), "empty.npy: empty file (0 bytes)"),
        (denoise(&deep, &x), "deep.npy: malformed .npy header"),
        (denoise(&ints, &x), "ints.npy: unsupported element type <i4"),
        (denoise("/dev/zero", &x), "/dev/zero: not a .npy file"),
        (denoise("/dev/urandom", &x), "/dev/urandom: not a .npy file"),
        (denoise(&data, &huge), "--x: "),
        (
            denoise(&f.out("missing.npy"), &x),
            "missing.npy: cannot read: No such file or directory",
        ),
    ];
    rows.extend(rows![
        ["sample", "--data", &huge, "--noise", &x, "--out", &out] => "huge.npy",
        ["sample", "--data", &data, "--noise", "/dev/zero", "--out", &out] => "/dev/zero: not a .npy file",
        ["fid", "--a", &huge, "--b", &data] => "huge.npy: the header declares shape",
        ["fid", "--a", "features:/dev/urandom", "--b", &data] => "/dev/urandom: not a .npy file",
        ["prdc", "--a", &data, "--b", &huge] => "huge.npy",
        ["fid-stats", &huge, "--out", &f.out("s.npz")] => "huge.npy",
        ["cluster", "--data", &format!("npy:{huge}"), "--stages", "3"] => "huge.npy",
        ["cluster", "--method", "gradient", "--gradient", &huge] => "huge.npy",
    ]);
    f.check(&rows, &[]);
}

#[test]
fn statistics_files() {
    let mut f = Fixture::new();
    let feats = f.npy("f.npy", &array![[0.0, 1.0], [1.0, 0.0], [0.5, 0.2]]);
    let good_sigma = array![[1.0, 0.0], [0.0, 1.0]];
    let mu = array![0.0, 0.0];
    stats_npz(&f.path("asym.npz"), &mu, &array![[1.0, 0.5], [0.0, 1.0]]);
    stats_npz(&f.path("neg.npz"), &mu, &(-&good_sigma));
    f.inputs.extend(["asym.npz".into(), "neg.npz".into()]);
    // A member declaring a huge shape; and a decompression bomb (10^8 zeros deflate to ~100 KB) whose
    // declared sigma does not fit mu.
    let mu_npy = raw_npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
        &[0; 16],
    );
    let huge_sigma = raw_npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 784), }",
        &[0; 16],
    );
    raw_npz(
        &f.path("huge.npz"),
        &[("mu.npy", mu_npy.clone()), ("sigma.npy", huge_sigma)],
        false,
    );
    let bomb_sigma = raw_npy(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }",
        &vec![0u8; 20_000_000],
    );
    raw_npz(
        &f.path("bomb.npz"),
        &[("mu.npy", mu_npy), ("sigma.npy", bomb_sigma)],
        true,
    );
    f.inputs.extend(["huge.npz".into(), "bomb.npz".into()]);
    let not_zip = f.file("junk.npz", b"PK\x03\x04 this is not a zip");
    let p = |n: &str| f.out(n);
    let rows = rows![
        ["fid", "--a", &p("asym.npz"), "--b", &feats] => "asym.npz: array \"sigma\": is not symmetric",
        ["fid", "--a", &p("neg.npz"), "--b", &feats] => "neg.npz: array \"sigma\": is not positive semi-definite",
        ["fid", "--a", &p("huge.npz"), "--b", &feats] => "huge.npz: sigma must be 2 x 2",
        ["fid", "--a", &p("bomb.npz"), "--b", &feats] => "bomb.npz: array \"sigma\"",
        ["fid", "--a", &not_zip, "--b", &feats] => "junk.npz: not a readable .npz",
        ["fid", "--a", "stats:/dev/zero", "--b", &feats] => "/dev/zero: not a readable .npz",
        ["prdc", "--a", &p("neg.npz"), "--b", &feats] => "sigma",
    ];
    f.check(&rows, &[]);
}

#[test]
fn datasets_images_and_fashion_mnist() {
    let mut f = Fixture::new();
    // Float images outside [0, 1] (4-D), read as images by fid-stats and cluster.
    let neg = {
        let a = Array3::from_shape_fn((2, 2, 2), |(i, j, k)| (i + j + k) as f64 - 1.0);
        let p = f.path("neg.npy");
        msd::npy::write_f64(&p, &a).unwrap();
        f.inputs.push("neg.npy".into());
        p.to_str().unwrap().to_string()
    };
    // Fashion-MNIST folders: a gzip whose header declares more values than the limit, an empty file, a
    // device, a truncated raw file.
    let bomb = f.mkdir("bomb");
    std::fs::write(
        bomb.join("train-images-idx3-ubyte.gz"),
        gz(&idx(0x0803, &[u32::MAX, 28, 28], &[0; 1000])),
    )
    .unwrap();
    let empty = f.mkdir("emptyfm");
    std::fs::write(empty.join("train-images-idx3-ubyte"), b"").unwrap();
    let dev = f.mkdir("dev");
    std::os::unix::fs::symlink("/dev/zero", dev.join("train-images-idx3-ubyte")).unwrap();
    let cut = f.mkdir("cut");
    std::fs::write(
        cut.join("train-images-idx3-ubyte"),
        idx(0x0803, &[10, 28, 28], &[0; 100]),
    )
    .unwrap();
    let cifar = f.mkdir("cifar");
    std::os::unix::fs::symlink("/dev/zero", cifar.join("data_batch_1.bin")).unwrap();
    // A PNG declaring 100000 x 100000 pixels (header only).
    let imgs = f.mkdir("imgs");
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 0, 0, 0, 0]);
    let crc = crc32(&png[12..]);
    png.extend_from_slice(&crc.to_be_bytes());
    std::fs::write(imgs.join("a.png"), &png).unwrap();
    let dir = |p: &Path| p.to_str().unwrap().to_string();
    let rows = rows![
        ["fid-stats", &neg, "--out", &f.out("s.npz")] => "neg.npy: value -1 at flat index 0 is outside [0, 1]",
        ["cluster", "--data", &format!("npy:{neg}")] => "outside [0, 1]",
        ["cluster", "--data", "fashion-mnist", "--fashion-mnist-dir", &dir(&bomb)] => "more than the limit of 2147483648 values",
        ["cluster", "--data", "fashion-mnist", "--fashion-mnist-dir", &dir(&empty)] => "train-images-idx3-ubyte: empty file",
        ["cluster", "--data", "fashion-mnist", "--fashion-mnist-dir", &dir(&dev)] => "wrong magic number",
        ["cluster", "--data", "fashion-mnist", "--fashion-mnist-dir", &dir(&cut)] => "truncated: the header's shape [10, 28, 28] needs 7840 data bytes",
        ["cluster", "--data", &format!("cifar10:{}", dir(&cifar))] => "data_batch_*.bin",
        ["cluster", "--data", &format!("images:{}", dir(&imgs))] => "a.png: cannot decode image",
        ["cluster", "--data", &format!("images:{}", dir(&imgs)), "--size", "100000"] => "--size",
        ["cluster", "--data", "fashion-mnist", "--limit", "0"] => "--limit",
        ["cluster", "--data", "fashion-mnist", "--limit", "-1"] => "--limit <N>': must be at least 1",
        ["cluster", "--data", "nonsense:x"] => "bad --data spec",
    ];
    f.check(&rows, &[]);
}

/// CRC-32 (IEEE) of a PNG chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn counts_have_limits() {
    let f = Fixture::new();
    let rows = rows![
        ["plan", "--nfe", "18446744073709551615"] => "--nfe",
        ["plan", "--nfe", "1e9"] => "must be an integer from 1 to 100000",
        ["plan", "--steps", "1000000000"] => "--steps",
        ["plan", "--solver", "heun", "--steps", "-3"] => "--steps",
        ["plan", "--schedule", "ldm", "--ldm-steps", "1e12"] => "--ldm-steps",
        ["plan", "--order", "0"] => "--order",
        ["cluster", "--samples", "1e13"] => "--samples",
        ["cluster", "--tau-grid", "1e12"] => "--tau-grid",
        ["cluster", "--method", "snr", "--baseline-grid", "1e9"] => "--baseline-grid",
        ["cluster", "--stages", "4", "--grid-step", "1e-12"] => "--grid-step 0.000000000001: the grid",
        ["cluster", "--stages", "1000000"] => "--stages",
        ["cluster", "--alpha", "1e300"] => "--alpha 1e300",
        ["train-features", "--out", &f.out("c.safetensors"), "--epochs", "1e18"] => "--epochs",
        ["train-features", "--out", &f.out("c.safetensors"), "--test-limit", "0"] => "--test-limit",
        ["train-features", "--out", &f.out("c.safetensors"), "--batch-size", "0"] => "--batch-size",
        ["prdc", "--a", "x.npy", "--b", "y.npy", "--k", "-1"] => "--k <K>': must be an integer from 1 to 10000",
        ["sample", "--data", "d.npy", "--noise", "z.npy", "--out", "o.npy", "--seed", "-1"] => "--seed",
        ["model-info", "--preset", "cifar10-ncsnpp-multistage", "--stage-weights", "1,nan,1"] => "must be finite",
    ];
    f.check(&rows, &[]);
    // Huge weights are normalised, not turned into zeros.
    let v = json_ok(&[
        "model-info",
        "--preset",
        "cifar10-ncsnpp-multistage",
        "--stage-weights",
        "1e308,1e308,1e308",
        "--json",
    ]);
    for w in v["weighted"]["weights"].as_array().unwrap() {
        assert!((w.as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-12, "{v}");
    }
}

#[test]
fn model_configs_and_weights() {
    let mut f = Fixture::new();
    let base = String::from_utf8(
        msd(&[
            "model-info",
            "--preset",
            "cifar10-ncsnpp-multistage",
            "--print-config",
        ])
        .stdout,
    )
    .unwrap();
    let ldm = String::from_utf8(
        msd(&[
            "model-info",
            "--preset",
            "celebahq-ldm-multistage",
            "--print-config",
        ])
        .stdout,
    )
    .unwrap();
    let set = |text: &str, key: &str, value: &str| -> String {
        text.lines()
            .map(|l| {
                if l.split('=').next().map(str::trim) == Some(key) {
                    format!("{key} = {value}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let cfgs = [
        (
            "blocks.toml",
            set(&base, "num_res_blocks", "1000000"),
            "residual blocks per level = 1000000, the limit is 64",
        ),
        (
            "mult.toml",
            set(&base, "ch_mult", "[1, 1000000000000]"),
            "channel multiplier",
        ),
        (
            "levels.toml",
            set(
                &base,
                "ch_mult",
                &format!("[{}]", vec!["1"; 100].join(", ")),
            ),
            "number of levels",
        ),
        (
            "wide.toml",
            set(&base, "en_width", "60000"),
            "model too large: about",
        ),
        (
            "bounds.toml",
            set(&base, "boundaries", "[0.4, 1.5]"),
            "boundary 1.5 lies outside the time domain",
        ),
        (
            "attn.toml",
            set(&ldm, "attention_ds", "[0]"),
            "attention entry 0",
        ),
        ("junk.toml", "this is = = not toml".into(), "junk.toml"),
        (
            // Within every config limit, but attention at 4096² after each of 64 blocks: the stage's FLOPs
            // do not fit u64 (a release build used to print a wrapped count).
            "attention-4096.toml",
            [
                ("in_channels", "1"),
                ("resolution", "4096"),
                ("en_width", "128"),
                ("de_widths", "[128]"),
                ("channel_mult", "[1]"),
                ("num_res_blocks", "64"),
                ("attention_ds", "[1]"),
                ("boundaries", "[]"),
            ]
            .iter()
            .fold(ldm.clone(), |t, (k, v)| set(&t, k, v)),
            "model too large: the FLOP count of stage 0 does not fit in 64 bits",
        ),
    ];
    let mut rows = vec![];
    for (name, text, needle) in cfgs {
        let p = f.file(name, text.as_bytes());
        rows.push(row(&["model-info", "--config", &p], needle));
    }
    let plan = f.file(
        "plan.json",
        b"{\"solver\": \"dpm-solver\", \"times\": [0.5, \"x\"]}",
    );
    rows.extend(rows![
        ["model-info", "--config", "/dev/zero"] => "--config /dev/zero: cannot read: larger than the 64.0 MiB limit of a model config",
        ["model-info", "--config", "/dev/urandom"] => "--config /dev/urandom",
        ["model-info", "--preset", "cifar10-ncsnpp-multistage", "--plan", "/dev/zero"] => "--plan /dev/zero",
        ["model-info", "--preset", "cifar10-ncsnpp-multistage", "--plan", &plan] => "plan.json: not the JSON of `msd plan --json`: invalid type: string \"x\", expected f64",
    ]);
    // Feature-network weights: NaN, not safetensors, a device.
    let nan = f.path("nan.safetensors");
    let mut m = std::collections::HashMap::new();
    m.insert(
        "fc2.weight".to_string(),
        candle_core::Tensor::new(&[f32::NAN, 1.0], &candle_core::Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&m, &nan).unwrap();
    f.inputs.push("nan.safetensors".into());
    let junk = f.file(
        "junk.safetensors",
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1}",
    );
    let feats = f.npy("feats.npy", &array![[0.5], [0.25]]);
    rows.extend(rows![
        ["fid", "--a", &feats, "--b", &feats, "--features", &format!("fmnist:{}", nan.display())] => "contains a non-finite value",
        ["fid", "--a", &feats, "--b", &feats, "--features", &format!("fmnist:{junk}")] => "junk.safetensors",
        ["fid", "--a", &feats, "--b", &feats, "--features", "inception:/dev/zero"] => "/dev/zero",
    ]);
    f.check(&rows, &[]);
}

#[test]
fn outputs_are_checked_first_and_never_left_behind() {
    let mut f = Fixture::new();
    let data = f.npy("d.npy", &array![[0.0, 1.0], [1.0, 0.0]]);
    let x = f.npy("x.npy", &array![[0.5, 0.5]]);
    let target = f.file("target.npy", b"keep me");
    let link = f.link("link.npy", Path::new(&target));
    let subdir = f.mkdir("sub");
    let fifo = f.path("fifo.npy");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    f.inputs.push("fifo.npy".into());
    let den = |out: &str| {
        rows![["denoise", "--data", &data, "--x", &x, "--t", "0.5", "--schedule", "vp-linear", "--out", out] => "--out"]
            .remove(0)
            .0
    };
    let rows = vec![
        (den(&link), "link.npy: cannot write: is a symbolic link"),
        (den(subdir.to_str().unwrap()), "sub: cannot write: is a directory"),
        (den(fifo.to_str().unwrap()), "fifo.npy: cannot write: exists and is not a regular file"),
        (den(&f.out("nodir/o.npy")), "nodir/o.npy: cannot write"),
        (
            rows![["cluster", "--data", "fashion-mnist", "--stages", "4", "--plot", &f.out("nodir/p.svg")] => ""].remove(0).0,
            "--plot: ",
        ),
        (
            rows![["cluster", "--data", "fashion-mnist", "--stages", "4", "--save-similarity", subdir.to_str().unwrap()] => ""].remove(0).0,
            "--save-similarity: ",
        ),
        (
            rows![["fid-stats", &data, "--out", &f.out("nodir/s.npz")] => ""].remove(0).0,
            "--out: ",
        ),
        (
            rows![["train-features", "--out", subdir.to_str().unwrap()] => ""].remove(0).0,
            "--out: ",
        ),
        (
            rows![["sample", "--data", &data, "--noise", &x, "--out", &link] => ""].remove(0).0,
            "symbolic link",
        ),
    ];
    f.check(&rows, &[]);
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
}

#[test]
fn stdout_on_a_full_disk_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let feats = write_npy(
        dir.path(),
        "f.npy",
        &array![[0.0, 1.0], [1.0, 0.0], [0.5, 0.2]],
    );
    let full = Path::new("/dev/full");
    for args in [
        vec!["plan", "--json"],
        vec!["plan"],
        vec!["schedule", "--t", "0.5"],
        vec!["model-info", "--preset", "cifar10-ncsnpp-multistage"],
        vec!["model-info", "--list-presets"],
        vec!["cluster", "--method", "snr", "--json"],
        vec!["fid", "--a", s(&feats), "--b", s(&feats)],
        vec!["prdc", "--a", s(&feats), "--b", s(&feats), "--k", "1"],
        vec!["plan", "--help"],
    ] {
        let o = Run::new(&args).limits(MEM, TIME).stdout_to(full).output();
        assert_eq!(o.status.code(), Some(1), "msd {args:?}: {}", stderr(&o));
        assert_clean_error(
            &o,
            "cannot write to standard output: No space left on device",
        );
    }
}

#[test]
fn defined_edge_cases_are_accepted() {
    // x0 at sigma = 0 is defined (the nearest training point), as the help says.
    let dir = tempfile::tempdir().unwrap();
    let data = write_npy(dir.path(), "d.npy", &array![[0.0, 1.0], [1.0, 0.0]]);
    let x = write_npy(dir.path(), "x.npy", &array![[0.9, 0.2]]);
    let out = dir.path().join("o.npy");
    let args = [
        "denoise",
        "--data",
        s(&data),
        "--x",
        s(&x),
        "--sigma",
        "0",
        "--schedule",
        "edm",
        "--predict",
        "x0",
        "--out",
        s(&out),
    ];
    let o = msd(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(msd::npy::read_matrix(&out).unwrap().0, array![[1.0, 0.0]]);
    // An existing regular output file is replaced: the same command again.
    let o = msd(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_only_files(dir.path(), &["d.npy", "x.npy", "o.npy"]);
}

#[test]
fn a_failed_sample_removes_its_trajectory() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_npy(dir.path(), "d.npy", &array![[0.0, 1.0], [1.0, 0.0]]);
    let z = write_npy(dir.path(), "z.npy", &array![[0.3, -0.2]]);
    let traj = dir.path().join("traj");
    // Step 3 cannot be written (a folder is in the way): the run fails after writing steps 0 to 2.
    std::fs::create_dir_all(traj.join("step_0003.npy")).unwrap();
    let out = dir.path().join("x.npy");
    let o = msd(&[
        "sample",
        "--data",
        s(&data),
        "--noise",
        s(&z),
        "--solver",
        "euler",
        "--steps",
        "6",
        "--out",
        s(&out),
        "--save-trajectory",
        s(&traj),
    ]);
    assert_clean_error(&o, "step_0003.npy");
    assert_only_files(dir.path(), &["d.npy", "z.npy", "traj"]);
    assert_only_files(&traj, &["step_0003.npy"]);
}
