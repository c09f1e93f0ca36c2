//! Subcommand handlers. `main.rs` parses the command line and calls one `run` function here per
//! subcommand; each returns the process exit code.

use std::io::IsTerminal;

pub mod cluster;
pub mod scan;
pub mod watch;

/// Exit code when nothing reaches `--fail-on`.
pub const EXIT_OK: u8 = 0;
/// Exit code when findings reach `--fail-on`.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit code for bad input or usage.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when a sink (`--sink`) failed; the findings were still printed.
pub const EXIT_SINK_FAILED: u8 = 3;

/// When to colour terminal output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when standard output is a terminal and NO_COLOR is unset.
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub fn enabled(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}
