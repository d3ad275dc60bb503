//! The `msd` binary: parse, run, and turn any error into one line on stderr with a non-zero exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `msd plan --json | head` would panic on the closed pipe; a command-line
    // tool should simply stop, as other Unix tools do.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A panic is a bug in msd, never the user's fault: say so in one line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (please report this bug): {info}");
    }));
    let cli = msd::cli::Cli::parse();
    match msd::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line, whatever the message (TOML and candle errors span several).
            let msg = format!("{err:#}");
            let lines: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!("error: {}", lines.join("; "));
            ExitCode::FAILURE
        }
    }
}
