use std::io::Write;

use super::*;

fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn opts_in(dir: &Path) -> LoadOptions {
    LoadOptions {
        limit: None,
        size: None,
        fashion_mnist_dir: dir.to_path_buf(),
    }
}

#[test]
fn spec_parsing() {
    let p = |s: &str| s.parse::<DataSpec>().unwrap();
    assert_eq!(
        p("fashion-mnist"),
        DataSpec::FashionMnist {
            split: Split::Train
        }
    );
    assert_eq!(
        p("fashion-mnist:train"),
        DataSpec::FashionMnist {
            split: Split::Train
        }
    );
    assert_eq!(
        p("fashion-mnist:test"),
        DataSpec::FashionMnist { split: Split::Test }
    );
    assert_eq!(
        p("cifar10:/a/b"),
        DataSpec::Cifar10 {
            dir: "/a/b".into(),
            split: Split::Train
        }
    );
    assert_eq!(
        p("cifar10:/a/b:test"),
        DataSpec::Cifar10 {
            dir: "/a/b".into(),
            split: Split::Test
        }
    );
    assert_eq!(p("images:dir"), DataSpec::Images { dir: "dir".into() });
    assert_eq!(
        p("npy:x.npy"),
        DataSpec::Npy {
            path: "x.npy".into()
        }
    );
    for bad in [
        "",
        "mnist",
        "fashion-mnist:val",
        "cifar10",
        "cifar10:",
        "images:",
        "npy",
        "npy:",
    ] {
        let e = bad.parse::<DataSpec>().unwrap_err();
        assert!(matches!(e, DataError::Spec { .. }), "{bad:?}: {e}");
    }
    // Display round-trips.
    for s in [
        "fashion-mnist:test",
        "cifar10:/d:train",
        "images:x",
        "npy:y.npy",
    ] {
        assert_eq!(p(s).to_string(), s);
        assert_eq!(p(&p(s).to_string()), p(s));
    }
}

/// A 3-image 2×3 IDX set; pixel value = 10·image + position.
fn write_idx_set(dir: &Path, prefix: &str, gzip: bool, labels: bool) {
    let data: Vec<u8> = (0..3u8)
        .flat_map(|i| (0..6u8).map(move |p| 10 * i + p))
        .collect();
    let img = idx_bytes(0x0803, &[3, 2, 3], &data);
    let lab = idx_bytes(0x0801, &[3], &[7, 1, 4]);
    let (ext, img, lab) = if gzip {
        (".gz", gz(&img), gz(&lab))
    } else {
        ("", img, lab)
    };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).unwrap();
    if labels {
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lab).unwrap();
    }
}

#[test]
fn fashion_mnist_idx_gz_and_raw() {
    for gzip in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        write_idx_set(dir.path(), "t10k", gzip, true);
        let ds = load(
            &DataSpec::FashionMnist { split: Split::Test },
            &opts_in(dir.path()),
        )
        .unwrap();
        assert_eq!(
            (ds.len(), ds.channels, ds.height, ds.width, ds.dim()),
            (3, 1, 2, 3, 6)
        );
        assert_eq!(ds.labels.as_deref(), Some(&[7u8, 1, 4][..]));
        assert_eq!(ds.images[[1, 2]], 12.0 / 255.0);
        assert_eq!(ds.images[[2, 5]], 25.0 / 255.0);
        assert_eq!(ds.to_f64()[[2, 5]], f64::from(25.0f32 / 255.0));
        // The train split is absent: a named error.
        let e = load(
            &DataSpec::FashionMnist {
                split: Split::Train,
            },
            &opts_in(dir.path()),
        )
        .unwrap_err();
        assert!(matches!(e, DataError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}");
        // --limit keeps the first images and their labels.
        let mut o = opts_in(dir.path());
        o.limit = Some(2);
        let ds = load(&DataSpec::FashionMnist { split: Split::Test }, &o).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.labels.as_deref(), Some(&[7u8, 1][..]));
        o.limit = Some(0);
        assert!(matches!(
            load(&DataSpec::FashionMnist { split: Split::Test }, &o),
            Err(DataError::ZeroLimit)
        ));
    }
}

#[test]
fn fashion_mnist_without_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), "train", false, false);
    let ds = load(
        &DataSpec::FashionMnist {
            split: Split::Train,
        },
        &opts_in(dir.path()),
    )
    .unwrap();
    assert_eq!(ds.len(), 3);
    assert!(ds.labels.is_none());
}

#[test]
fn idx_errors() {
    let p = Path::new("f.idx");
    // Wrong magic (a labels file read as images).
    let e = parse_idx_u8(&idx_bytes(0x0801, &[3], &[0, 1, 2]), 3, p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::BadMagic {
                found: 0x0801,
                expected: 0x0803,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("f.idx") && e.to_string().contains("magic"),
        "{e}"
    );
    // Truncated data, truncated header, too short for the magic.
    let e = parse_idx_u8(&idx_bytes(0x0803, &[2, 2, 2], &[0; 7]), 3, p).unwrap_err();
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    let e = parse_idx_u8(&0x0803u32.to_be_bytes()[..], 3, p).unwrap_err();
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    let e = parse_idx_u8(&[0, 0], 3, p).unwrap_err();
    assert!(matches!(e, DataError::Truncated { .. }), "{e}");
    // Trailing bytes.
    let e = parse_idx_u8(&idx_bytes(0x0803, &[1, 1, 1], &[0, 0]), 3, p).unwrap_err();
    assert!(matches!(e, DataError::Corrupt { .. }), "{e}");
    // Label count differs from the image count; an empty set; a corrupt gzip stream.
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), "t10k", false, false);
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        idx_bytes(0x0801, &[2], &[0, 1]),
    )
    .unwrap();
    let e = load(
        &DataSpec::FashionMnist { split: Split::Test },
        &opts_in(dir.path()),
    )
    .unwrap_err();
    assert!(
        matches!(e, DataError::Corrupt { .. }) && e.to_string().contains("2 labels for 3 images"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("train-images-idx3-ubyte"),
        idx_bytes(0x0803, &[0, 28, 28], &[]),
    )
    .unwrap();
    let e = load(
        &DataSpec::FashionMnist {
            split: Split::Train,
        },
        &opts_in(dir.path()),
    )
    .unwrap_err();
    assert!(matches!(e, DataError::Empty { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte.gz"),
        b"not gzip at all",
    )
    .unwrap();
    let e = load(
        &DataSpec::FashionMnist { split: Split::Test },
        &opts_in(dir.path()),
    )
    .unwrap_err();
    assert!(
        matches!(e, DataError::Corrupt { .. }) && e.to_string().contains("gzip"),
        "{e}"
    );
}

/// Writes CIFAR records with label `l` and pixel bytes (l + position) mod 256.
fn cifar_records(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for &l in labels {
        b.push(l);
        b.extend((0..3072usize).map(|p| ((usize::from(l) + p) % 256) as u8));
    }
    b
}

#[test]
fn cifar10_batches() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("data_batch_2.bin"), cifar_records(&[3, 4])).unwrap();
    std::fs::write(sub.join("data_batch_1.bin"), cifar_records(&[1, 2])).unwrap();
    std::fs::write(sub.join("test_batch.bin"), cifar_records(&[9])).unwrap();
    let o = opts_in(dir.path());
    let ds = load(
        &format!("cifar10:{}", dir.path().display()).parse().unwrap(),
        &o,
    )
    .unwrap();
    assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (4, 3, 32, 32));
    assert_eq!(ds.labels.as_deref(), Some(&[1u8, 2, 3, 4][..]));
    // Image 2 (label 3): pixel 1024 is the first green byte, (3 + 1024) % 256 = 3.
    assert_eq!(ds.images[[2, 1024]], 3.0 / 255.0);
    assert_eq!(ds.images[[2, 5]], 8.0 / 255.0);
    let ds = load(
        &format!("cifar10:{}:test", sub.display()).parse().unwrap(),
        &o,
    )
    .unwrap();
    assert_eq!(ds.labels.as_deref(), Some(&[9u8][..]));
    let mut ol = o.clone();
    ol.limit = Some(3);
    let ds = load(&format!("cifar10:{}", sub.display()).parse().unwrap(), &ol).unwrap();
    assert_eq!(ds.labels.as_deref(), Some(&[1u8, 2, 3][..]));
    // Errors: truncated, bad label, empty, missing.
    let p = Path::new("b.bin");
    let mut t = cifar_records(&[1]);
    t.pop();
    assert!(matches!(
        parse_cifar_batch(&t, p),
        Err(DataError::Truncated { .. })
    ));
    assert!(matches!(
        parse_cifar_batch(&cifar_records(&[10]), p),
        Err(DataError::Corrupt { .. })
    ));
    assert!(matches!(
        parse_cifar_batch(&[], p),
        Err(DataError::EmptyFile { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    let e = load(
        &format!("cifar10:{}", empty.path().display())
            .parse()
            .unwrap(),
        &o,
    )
    .unwrap_err();
    assert!(
        matches!(e, DataError::NotFound { .. }) && e.to_string().contains("data_batch_"),
        "{e}"
    );
}

/// Image decoders convert u8 to f32 in their own way: equal to v/255 within an ulp or two.
fn assert_close(got: f32, want: f32) {
    assert!((got - want).abs() <= 1e-6, "{got} != {want}");
}

#[test]
fn image_folders() {
    use image::{GrayImage, RgbImage};
    let dir = tempfile::tempdir().unwrap();
    let o = opts_in(dir.path());
    let spec = DataSpec::Images {
        dir: dir.path().to_path_buf(),
    };
    // Empty folder.
    assert!(matches!(load(&spec, &o), Err(DataError::Empty { .. })));
    // Two grey 4×2 PNGs (and a text file, ignored).
    GrayImage::from_fn(4, 2, |x, y| image::Luma([(10 * y + x) as u8]))
        .save(dir.path().join("a.png"))
        .unwrap();
    GrayImage::from_pixel(4, 2, image::Luma([255]))
        .save(dir.path().join("b.PNG"))
        .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let ds = load(&spec, &o).unwrap();
    assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (2, 1, 2, 4));
    assert_close(ds.images[[0, 4 + 3]], 13.0 / 255.0);
    assert_close(ds.images[[1, 0]], 1.0);
    // One RGB image makes every image RGB, planar C, H, W.
    RgbImage::from_fn(4, 2, |x, y| image::Rgb([x as u8, y as u8, 200]))
        .save(dir.path().join("c.png"))
        .unwrap();
    let ds = load(&spec, &o).unwrap();
    assert_eq!((ds.len(), ds.channels), (3, 3));
    let hw = 8;
    assert_close(ds.images[[2, 4 + 3]], 3.0 / 255.0); // R at (x=3, y=1)
    assert_close(ds.images[[2, hw + 4 + 3]], 1.0 / 255.0); // G = y
    assert_close(ds.images[[2, 2 * hw]], 200.0 / 255.0); // B
    assert_close(ds.images[[0, hw + 4 + 3]], 13.0 / 255.0); // grey copied to every channel

    // A JPEG decodes too (lossy: compare loosely).
    RgbImage::from_pixel(4, 2, image::Rgb([128, 128, 128]))
        .save(dir.path().join("d.jpg"))
        .unwrap();
    let ds = load(&spec, &o).unwrap();
    assert!(
        (ds.images[[3, 0]] - 128.0 / 255.0).abs() < 0.03,
        "{}",
        ds.images[[3, 0]]
    );
    // Mismatched size is an error naming both files; --size resizes and crops.
    GrayImage::new(5, 5).save(dir.path().join("e.png")).unwrap();
    let e = load(&spec, &o).unwrap_err();
    assert!(matches!(e, DataError::SizeMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("e.png")
            && e.to_string().contains("a.png")
            && e.to_string().contains("--size"),
        "{e}"
    );
    let mut os = o.clone();
    os.size = Some(3);
    let ds = load(&spec, &os).unwrap();
    assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (5, 3, 3, 3));
    // A uniform image stays uniform after resize and crop.
    assert!(ds.images.row(1).iter().all(|&v| (v - 1.0).abs() < 1e-6));
    // --limit counts files in name order.
    os.limit = Some(2);
    let ds = load(&spec, &os).unwrap();
    assert_eq!((ds.len(), ds.channels), (2, 1));
    // A corrupt PNG names the file.
    std::fs::write(dir.path().join("f.png"), b"\x89PNG garbage").unwrap();
    let e = load(&spec, &o).unwrap_err();
    assert!(
        matches!(e, DataError::Decode { .. }) && e.to_string().contains("f.png"),
        "{e}"
    );
}

#[test]
fn npy_files() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts_in(dir.path());
    let spec = |p: &Path| DataSpec::Npy {
        path: p.to_path_buf(),
    };
    // uint8 N × H × W → /255, 1 channel.
    let p = dir.path().join("u8.npy");
    let a =
        ndarray::Array3::<u8>::from_shape_fn((2, 2, 3), |(i, j, k)| (100 * i + 10 * j + k) as u8);
    crate::npy::write_u8(&p, &a).unwrap();
    let ds = load(&spec(&p), &o).unwrap();
    assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (2, 1, 2, 3));
    assert_eq!(ds.images[[1, 5]], 112.0 / 255.0);
    // float N × d: taken as given; d = 784 → 1×28×28, d = 3072 → 3×32×32, d = 5 → 1×1×5.
    for (d, chw) in [(784, (1, 28, 28)), (3072, (3, 32, 32)), (5, (1, 1, 5))] {
        let p = dir.path().join(format!("f{d}.npy"));
        let a = Array2::<f64>::from_shape_fn((3, d), |(i, j)| (i * d + j) as f64 / (3 * d) as f64);
        crate::npy::write_f64(&p, &a).unwrap();
        let mut ol = o.clone();
        ol.limit = Some(2);
        let ds = load(&spec(&p), &ol).unwrap();
        assert_eq!((ds.len(), (ds.channels, ds.height, ds.width)), (2, chw));
        assert_eq!(ds.images[[1, 1]], ((d + 1) as f64 / (3 * d) as f64) as f32);
    }
    // N × C × H × W f32.
    let p = dir.path().join("nchw.npy");
    crate::npy::write_f32(&p, &ndarray::Array4::<f32>::from_elem((2, 3, 4, 5), 0.5)).unwrap();
    let ds = load(&spec(&p), &o).unwrap();
    assert_eq!((ds.len(), ds.channels, ds.height, ds.width), (2, 3, 4, 5));
    // Errors: rank 1, empty, NaN, not a .npy, missing.
    let p = dir.path().join("r1.npy");
    crate::npy::write_f64(&p, &ndarray::Array1::<f64>::zeros(4)).unwrap();
    assert!(matches!(load(&spec(&p), &o), Err(DataError::Shape { .. })));
    let p = dir.path().join("empty.npy");
    crate::npy::write_f64(&p, &Array2::<f64>::zeros((0, 4))).unwrap();
    assert!(matches!(load(&spec(&p), &o), Err(DataError::Empty { .. })));
    let p = dir.path().join("nan.npy");
    crate::npy::write_f64(&p, &ndarray::arr2(&[[0.0, f64::NAN]])).unwrap();
    let e = load(&spec(&p), &o).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    let p = dir.path().join("junk.npy");
    std::fs::write(&p, b"this is not a numpy file, just some text").unwrap();
    assert!(matches!(
        load(&spec(&p), &o),
        Err(DataError::Npy(NpyError::NotNpy { .. }))
    ));
    let e = load(&spec(&dir.path().join("missing.npy")), &o).unwrap_err();
    assert!(e.to_string().contains("missing.npy"), "{e}");
}

/// The real Fashion-MNIST test split (Debian's dataset-fashion-mnist; scripts/setup.sh installs it):
/// 10 000 images of 28 × 28, 1 000 per class, first labels 9, 2, 1, 1, 6 (ankle boot, pullover, trouser, …).
#[test]
fn real_fashion_mnist_test_split() {
    let o = LoadOptions {
        limit: None,
        size: None,
        fashion_mnist_dir: PathBuf::from(DEFAULT_FASHION_MNIST_DIR),
    };
    let ds = load(&"fashion-mnist:test".parse().unwrap(), &o)
        .expect("Fashion-MNIST missing: run scripts/setup.sh (installs dataset-fashion-mnist)");
    assert_eq!(
        (ds.len(), ds.channels, ds.height, ds.width),
        (10_000, 1, 28, 28)
    );
    let labels = ds.labels.as_ref().unwrap();
    assert_eq!(&labels[..5], &[9, 2, 1, 1, 6]);
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[usize::from(l)] += 1);
    assert_eq!(counts, [1000; 10]);
    let (lo, hi) = ds
        .images
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert_eq!((lo, hi), (0.0, 1.0));
}
