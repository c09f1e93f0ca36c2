//! Running the rule dump tools inside a network namespace.
//!
//! `setns(CLONE_NEWNET)` changes the namespace of the calling thread only, and a child process
//! starts in the namespace of the thread that spawned it. So each inspection runs on a fresh
//! thread that joins the pod's namespace, spawns the tools there and ends; the agent's other
//! threads never leave the host namespace. Reading `/proc/thread-self/net/...` on that thread
//! shows the pod namespace's view (its addresses).

use std::fs::File;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use nix::sched::{setns, CloneFlags};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source} (the agent needs CAP_SYS_ADMIN and hostPID)")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("inspection thread failed for {path}")]
    Thread { path: PathBuf },
}

/// One command to run in the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolCommand {
    /// What the output is (`iptables-legacy-save`, `nft -j list ruleset`, ...).
    pub label: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Run only when this file, read inside the namespace, is not empty (e.g.
    /// `/proc/thread-self/net/ip_tables_names`: no legacy tables, nothing to save).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only_if_nonempty: Option<PathBuf>,
}

/// What one command printed.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub command: ToolCommand,
    /// `Err` when the program could not be started.
    pub output: Result<Output, String>,
    /// Not run: its `only_if_nonempty` file was empty (the output is then empty).
    pub skipped: bool,
}

/// What was read inside the namespace.
#[derive(Debug, Clone)]
pub struct NetnsReading {
    pub outputs: Vec<ToolOutput>,
    /// `/proc/thread-self/net/if_inet6` as seen inside the namespace (`None` if unreadable).
    pub if_inet6: Option<String>,
}

/// Enters the namespace at `path` on a new thread, runs `commands` there and reads its IPv6
/// address table.
pub fn read_in_netns(path: &Path, commands: &[ToolCommand]) -> Result<NetnsReading, NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let owned_path = path.to_path_buf();
    let commands = commands.to_vec();
    let handle = std::thread::Builder::new()
        .name("netns-inspect".into())
        .spawn(move || -> Result<NetnsReading, NetnsError> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
                path: owned_path.clone(),
                source,
            })?;
            let outputs = commands
                .into_iter()
                .map(|command| {
                    let nothing_to_read = command.only_if_nonempty.as_ref().is_some_and(|f| {
                        std::fs::read_to_string(f).is_ok_and(|t| t.trim().is_empty())
                    });
                    if nothing_to_read {
                        return ToolOutput {
                            command,
                            output: Ok(Output {
                                status: ExitStatus::from_raw(0),
                                stdout: Vec::new(),
                                stderr: Vec::new(),
                            }),
                            skipped: true,
                        };
                    }
                    let output = run_bounded(&command);
                    ToolOutput {
                        command,
                        output,
                        skipped: false,
                    }
                })
                .collect();
            let if_inet6 = std::fs::read_to_string("/proc/thread-self/net/if_inet6").ok();
            Ok(NetnsReading { outputs, if_inet6 })
        })
        .map_err(|_| NetnsError::Thread {
            path: path.to_path_buf(),
        })?;
    handle.join().map_err(|_| NetnsError::Thread {
        path: path.to_path_buf(),
    })?
}

/// The most a dump tool may print (the rules in a namespace are not the agent's to trust): far
/// beyond any real pod's rules, small enough for the agent's memory limit.
pub const MAX_TOOL_OUTPUT: u64 = 32 << 20;

/// Runs a tool, reading at most [`MAX_TOOL_OUTPUT`] bytes of its output.
fn run_bounded(command: &ToolCommand) -> Result<Output, String> {
    let mut child = Command::new(&command.program)
        .args(&command.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut e).take(64 * 1024).read_to_end(&mut buf);
            // Drain the rest so the tool never blocks on a full pipe.
            let _ = std::io::copy(&mut e, &mut std::io::sink());
            buf
        })
    });
    let mut stdout = Vec::new();
    if let Some(out) = child.stdout.take() {
        out.take(MAX_TOOL_OUTPUT + 1)
            .read_to_end(&mut stdout)
            .map_err(|e| e.to_string())?;
    }
    if stdout.len() as u64 > MAX_TOOL_OUTPUT {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "printed more than {} MiB of rules",
            MAX_TOOL_OUTPUT >> 20
        ));
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Whether an `if_inet6` table lists an address the pod can reach the outside with: global scope
/// (scope field 00) on an interface other than `lo`.
pub fn has_global_ipv6(if_inet6: &str) -> bool {
    if_inet6.lines().any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // address ifindex prefixlen scope flags ifname
        cols.len() >= 6 && cols[3] == "00" && cols[5] != "lo"
    })
}

/// Looks a program up on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_ipv6_detection() {
        let only_local = "00000000000000000000000000000001 01 80 10 80       lo\n\
                          fe800000000000000c4fa5fffe6a7b11 02 40 20 80     eth0\n";
        assert!(!has_global_ipv6(only_local));
        let global = format!("{only_local}20010db8000000000000000000000005 02 40 00 80     eth0\n");
        assert!(has_global_ipv6(&global));
    }
}
