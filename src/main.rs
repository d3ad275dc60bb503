//! The `msd` binary: parse, run, and turn any error into one line on stderr with a non-zero exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything else: allocator and candle thread settings (see `msd::runtime`).
    msd::runtime::configure();
    // Rust ignores SIGPIPE, so `msd plan --json | head` would panic on the closed pipe; a command-line
    // tool should simply stop, as other Unix tools do.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Ctrl-C (or kill) during a write removes the temporary output file.
    msd::output::install_signal_cleanup();
    // A panic is a bug in msd, never the user's fault: say so in one line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "error: internal error (please report this bug): {}",
            msd::cli::one_line(&info.to_string())
        );
    }));
    let cli = match msd::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return msd::cli::clap_exit(e),
    };
    match msd::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<msd::cli::Interrupted>() => {
            ExitCode::from(msd::cli::Interrupted::EXIT_CODE)
        }
        Err(err) => {
            eprintln!("error: {}", msd::cli::error_line(&err));
            ExitCode::FAILURE
        }
    }
}
