//! Ctrl-C: `msd train` writes a checkpoint, exits with status 130 and leaves no temporary file; a command
//! interrupted while it works or writes leaves neither its output nor a temporary file behind.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use msd::accel::train::checkpoint;

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_msd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start msd")
}

fn sigint(child: &Child) {
    // SAFETY: kill with a valid pid and signal number.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill -INT");
}

/// Waits at most `limit`; kills the child and fails the test after that.
fn wait(child: &mut Child, limit: Duration) -> (ExitStatus, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("piped")
                .read_to_string(&mut err)
                .expect("stderr");
            return (status, err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("msd did not stop within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir` (recursively) whose name ends in `.tmp`.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(temporaries(&p));
        }
        if p.to_string_lossy().ends_with(".tmp") {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn ctrl_c_during_training_writes_a_checkpoint_and_exits_130() {
    if !msd::data::default_fashion_mnist_dir().exists() {
        eprintln!("skipped: Fashion-MNIST is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    // Far more steps than the test waits for, no periodic checkpoint: only Ctrl-C writes one.
    let mut child = spawn(&[
        "train",
        "--preset",
        "tiny-ncsnpp-multistage",
        "--data",
        "fashion-mnist",
        "--limit",
        "8",
        "--batch",
        "2",
        "--steps",
        "100000",
        "--checkpoint-every",
        "0",
        "--quiet",
        "--out",
        r,
    ]);
    // Interrupt after two steps are logged.
    let metrics = run.join("metrics.jsonl");
    let start = Instant::now();
    while std::fs::read_to_string(&metrics)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no training steps logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    sigint(&child);
    let (status, err) = wait(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "{status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("interrupted: checkpoint "),
        "{err}"
    );
    // The checkpoint holds the last finished step (the loop stops between steps) and loads.
    let steps = std::fs::read_to_string(&metrics).unwrap().lines().count() as u64;
    let ck = checkpoint::latest_checkpoint(&run)
        .unwrap()
        .expect("a checkpoint");
    assert!(
        ck.ends_with(format!("checkpoints/step-{steps:08}")),
        "{ck:?}"
    );
    assert_eq!(checkpoint::read_state(&ck).unwrap().step, steps);
    checkpoint::load_model(&ck, true, &candle_core::Device::Cpu).unwrap();
    assert_eq!(temporaries(&run), Vec::<String>::new());
}

#[test]
fn ctrl_c_while_sampling_leaves_no_output_and_no_temporary() {
    // The optimal denoiser of 3000 random points in 256 dimensions, 200 samples, 40 steps: long enough
    // (seconds) that the signals land during the work and, for the later ones, possibly in the write.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.npy");
    let noise = tmp.path().join("z.npy");
    let mut state = 1u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let d = ndarray::Array2::from_shape_fn((3000, 256), |_| next());
    let z = ndarray::Array2::from_shape_fn((200, 256), |_| 2.0 * next() - 1.0);
    msd::npy::write_f64(&data, &d).unwrap();
    msd::npy::write_f64(&noise, &z).unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("x.npy");
    for delay_ms in [150, 600, 1500, 3000] {
        let mut child = spawn(&[
            "sample",
            "--data",
            data.to_str().unwrap(),
            "--noise",
            noise.to_str().unwrap(),
            "--solver",
            "ddim",
            "--steps",
            "40",
            "--out",
            out.to_str().unwrap(),
        ]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        sigint(&child);
        let (status, err) = wait(&mut child, Duration::from_secs(60));
        assert!(!err.contains("panicked"), "{err}");
        if status.success() {
            // Finished before the signal: a complete output.
            let (x, _) = msd::npy::read_f64(&out).unwrap();
            assert_eq!(x.shape(), &[200, 256]);
            std::fs::remove_file(&out).unwrap();
        } else {
            assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}: {err}");
            assert!(
                !out.exists(),
                "interrupted after {delay_ms} ms: output left"
            );
        }
        assert_eq!(
            std::fs::read_dir(&out_dir).unwrap().count(),
            0,
            "interrupted after {delay_ms} ms: {:?}",
            temporaries(&out_dir)
        );
    }
}
