//! The command line. `main.rs` parses it and calls one handler here per subcommand (`scan`,
//! `watch`, `node`, `rules`); each returns the process exit code.
//!
//! Below the handlers sit [`pipeline`] (read → judge → deliver, and the exit codes) and [`args`]
//! (the argument groups the subcommands share). `watch` and `node` use those two, never a
//! handler.

pub mod args;
pub mod node;
pub mod pipeline;
pub mod rules;
pub mod scan;
pub mod watch;
