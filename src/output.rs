//! Output files: checked before the work, written through a temporary file that is renamed into place, and
//! removed on every error (and on Ctrl-C), so that a failed or interrupted command leaves nothing behind.
//!
//! An output path that exists and is not a regular file (a symlink, a FIFO, a device, a directory) is
//! **refused**, never replaced: renaming over it would silently turn a symlink or a device node into a
//! plain file. Remove it first, or name another path.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::limits::io_message;

/// Why an output path cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write: {why}")]
pub struct OutputError {
    pub path: PathBuf,
    pub why: String,
}

fn err(path: &Path, why: impl Into<String>) -> OutputError {
    OutputError {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// The folder a file path is written into (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks that `path` can be written as a file: its folder exists and takes new files, and `path` is absent
/// or a regular file (see the module documentation). Call it before long work.
pub fn check(path: &Path) -> Result<(), OutputError> {
    if path.file_name().is_none() {
        return Err(err(path, "not a file path"));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let ft = m.file_type();
            if ft.is_dir() {
                return Err(err(path, "is a directory"));
            }
            if ft.is_symlink() {
                return Err(err(
                    path,
                    "is a symbolic link; msd does not replace links (remove it or name the target)",
                ));
            }
            if !ft.is_file() {
                return Err(err(
                    path,
                    "exists and is not a regular file (FIFO, device or socket); msd refuses to replace it",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(path, io_message(&e))),
    }
    let dir = parent_dir(path);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(err(path, format!("{} is not a directory", dir.display()))),
        Err(e) => return Err(err(path, format!("{}: {}", dir.display(), io_message(&e)))),
    }
    // Writable? Create (and remove) the temporary file the write will use.
    drop(TempFile::create(path)?);
    Ok(())
}

/// The temporary file being written, unlinked by the SIGINT/SIGTERM handler (one at a time).
static PENDING: AtomicPtr<libc::c_char> = AtomicPtr::new(std::ptr::null_mut());

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    let p = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: unlink, signal and raise are async-signal-safe; `p` is a leaked, NUL-terminated CString.
    unsafe {
        if !p.is_null() {
            libc::unlink(p);
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Installs the handler that removes a pending temporary file on Ctrl-C or `kill` (then exits by the
/// signal, as without it). Called once by the binary.
pub fn install_signal_cleanup() {
    #[cfg(unix)]
    // SAFETY: `on_signal` only calls async-signal-safe functions.
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
        libc::signal(libc::SIGHUP, h);
    }
}

/// A temporary file beside the destination (`.NAME.PID.tmp`), removed when dropped uncommitted.
#[derive(Debug)]
pub struct TempFile {
    tmp: PathBuf,
    dest: PathBuf,
    registered: *mut libc::c_char,
    done: bool,
}

impl TempFile {
    /// Creates the temporary file for `dest` (which must pass [`check`]'s rules).
    pub fn create(dest: &Path) -> Result<Self, OutputError> {
        let name = dest
            .file_name()
            .ok_or_else(|| err(dest, "not a file path"))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = dest.with_file_name(tmp_name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| err(dest, io_message(&e)))?;
        let registered = {
            use std::os::unix::ffi::OsStrExt;
            match CString::new(tmp.as_os_str().as_bytes()) {
                Ok(c) => {
                    let p = c.into_raw();
                    let old = PENDING.swap(p, Ordering::SeqCst);
                    if !old.is_null() {
                        // A nested temp file: keep the newer one registered, free nothing here (the
                        // older owner frees its own pointer).
                        PENDING.store(old, Ordering::SeqCst);
                        std::ptr::null_mut()
                    } else {
                        p
                    }
                }
                Err(_) => std::ptr::null_mut(),
            }
        };
        Ok(TempFile {
            tmp,
            dest: dest.to_path_buf(),
            registered,
            done: false,
        })
    }

    /// The temporary path to write to.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Opens the temporary file for writing (truncating it).
    pub fn file(&self) -> Result<File, OutputError> {
        File::create(&self.tmp).map_err(|e| err(&self.dest, io_message(&e)))
    }

    /// Syncs the written file and renames it over the destination, after checking the destination again.
    pub fn commit(mut self) -> Result<(), OutputError> {
        check_dest_kind(&self.dest)?;
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| err(&self.dest, io_message(&e)))?;
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| err(&self.dest, io_message(&e)))?;
        self.done = true;
        Ok(())
    }
}

fn check_dest_kind(path: &Path) -> Result<(), OutputError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(err(
            path,
            "exists and is not a regular file (directory, link, FIFO or device); msd refuses to replace it",
        )),
        _ => Ok(()),
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.registered.is_null() {
            let _ = PENDING.compare_exchange(
                self.registered,
                std::ptr::null_mut(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            // SAFETY: `registered` came from CString::into_raw and is freed once, here. A signal handler
            // that already took it unlinks and re-raises; the process ends before this runs.
            drop(unsafe { CString::from_raw(self.registered) });
        }
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `path` through a temporary file: `write` fills it; on any error nothing is left behind.
pub fn write_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), OutputError>
where
    E: std::fmt::Display,
{
    check(path)?;
    let tmp = TempFile::create(path)?;
    write(tmp.path()).map_err(|e| err(path, e.to_string()))?;
    tmp.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_and_leaves_nothing_on_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write_with(&p, |t| std::fs::write(t, b"ok")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
        let e = write_with(&p, |t| {
            std::fs::write(t, b"half")?;
            Err(std::io::Error::other("disk on fire"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("disk on fire"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"ok", "the old file stays");
        assert_eq!(entries(d.path()), ["out.bin"]);
    }

    #[test]
    fn refuses_what_it_must_not_replace() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = check(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = check(d.path()).unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let e = check(Path::new("/dev/null")).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = check(&d.path().join("no/such/dir/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(entries(d.path()), ["link", "target"]);
    }
}
