//! The CLI test harness every `tests/cli*.rs` file shares: runs the built `msd` binary under a memory and
//! time limit, and checks that bad input gets exactly one clean error line.
//!
//! Limits: every run gets an address-space limit ([`MEM_LIMIT`], through `setrlimit(RLIMIT_AS)` in the child
//! before `exec`) and a wall-clock limit ([`TIME_LIMIT`], the child is killed after it). A run that hits
//! either fails the test that made it: an input that makes msd allocate without bound or hang is a bug.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ndarray::{Array, Dimension};

/// Address space of one `msd` run. Generous for the small inputs tests use (OpenBLAS and rayon reserve
/// address space per thread), small enough that an unbounded allocation fails fast instead of swapping.
pub const MEM_LIMIT: u64 = 3 << 30;
/// Wall-clock limit of one `msd` run (tests run in parallel on a loaded 2-core machine).
pub const TIME_LIMIT: Duration = Duration::from_secs(120);

/// How to run one `msd` command.
pub struct Run<'a> {
    pub args: Vec<String>,
    pub env: Vec<(&'a str, PathBuf)>,
    pub mem: u64,
    pub time: Duration,
    pub stdout_to: Option<PathBuf>,
}

impl<'a> Run<'a> {
    pub fn new(args: &[&str]) -> Self {
        Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            mem: MEM_LIMIT,
            time: TIME_LIMIT,
            stdout_to: None,
        }
    }

    pub fn env(mut self, key: &'a str, value: &Path) -> Self {
        self.env.push((key, value.to_path_buf()));
        self
    }

    /// Tighter limits (the bad-input table: a hostile input must fail fast and small).
    pub fn limits(mut self, mem: u64, time: Duration) -> Self {
        self.mem = mem;
        self.time = time;
        self
    }

    /// Sends stdout to a file (e.g. `/dev/full`) instead of capturing it.
    pub fn stdout_to(mut self, path: &Path) -> Self {
        self.stdout_to = Some(path.to_path_buf());
        self
    }

    /// Runs it; panics (failing the test) when the run outlives its time limit.
    pub fn output(self) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_msd"));
        c.args(&self.args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        match &self.stdout_to {
            Some(p) => c.stdout(
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .expect("open the stdout target"),
            ),
            None => c.stdout(Stdio::piped()),
        };
        let mem = self.mem;
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: mem as libc::rlim_t,
                        rlim_max: mem as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = c.spawn().expect("run msd");
        let reader = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out_t = child
            .stdout
            .take()
            .map(|s| reader(Box::new(s) as Box<dyn Read + Send>));
        let err_t = reader(Box::new(child.stderr.take().expect("piped stderr")));
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for msd") {
                break st;
            }
            if start.elapsed() > self.time {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "msd {:?} ran longer than {:?}: killed (stderr so far: {})",
                    self.args,
                    self.time,
                    String::from_utf8_lossy(&err_t.join().unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Output {
            status,
            stdout: out_t
                .map(|t| t.join().unwrap_or_default())
                .unwrap_or_default(),
            stderr: err_t.join().unwrap_or_default(),
        }
    }
}

/// Runs `msd ARGS` under the default limits.
pub fn msd(args: &[&str]) -> Output {
    Run::new(args).output()
}

/// Runs `msd ARGS` with extra environment variables.
pub fn msd_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut r = Run::new(args);
    for (k, v) in env {
        r = r.env(k, v);
    }
    r.output()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one JSON object a successful run printed.
pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "msd failed: {}", stderr(o));
    serde_json::from_str(stdout(o).trim()).expect("one JSON object")
}

/// Runs `msd ARGS` and returns the JSON it printed (it must succeed).
pub fn json_ok(args: &[&str]) -> serde_json::Value {
    json(&msd(args))
}

/// Asserts a failed run (non-zero exit, not killed by a signal) whose stderr is exactly one line
/// `error: …` that mentions `needle`, with no panic or internal-error text.
pub fn assert_clean_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure; stderr: {err}");
    assert!(
        o.status.code().is_some(),
        "killed by a signal ({:?}); stderr: {err}",
        o.status
    );
    assert!(
        !err.contains("panicked")
            && !err.contains("internal error")
            && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "more than one line: {err}"
    );
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

/// Runs `msd ARGS`, expecting a clean one-line error that mentions `needle`.
pub fn fails_with(args: &[&str], needle: &str) {
    assert_clean_error(&msd(args), needle);
}

/// Asserts that `dir` holds exactly the files named in `expected` (no output or temp file left behind).
pub fn assert_only_files(dir: &Path, expected: &[&str]) {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .expect("read the test dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "files in {}", dir.display());
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 test path")
}

/// Writes a float64 `.npy` into `dir`.
pub fn write_npy<D: Dimension>(dir: &Path, name: &str, a: &Array<f64, D>) -> PathBuf {
    let p = dir.join(name);
    msd::npy::write_f64(&p, a).expect("write test .npy");
    p
}
