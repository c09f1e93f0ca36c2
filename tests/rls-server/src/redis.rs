//! A real `redis-server` (Debian's) on a free loopback port, without persistence, for tests.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_DEADLINE: Duration = Duration::from_secs(10);

/// A `redis-server` child process; killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// Why Redis could not be started: tests skip with this reason when it is `NotInstalled`.
#[derive(Debug)]
pub enum RedisError {
    NotInstalled,
    Failed(String),
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotInstalled => f.write_str(
                "redis-server is not installed (apt-get install redis-server; .ci/install-tools.sh does it)",
            ),
            Self::Failed(reason) => write!(f, "redis-server did not start: {reason}"),
        }
    }
}

impl std::error::Error for RedisError {}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Whether a Redis answers PING on `port`.
fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers.
    pub fn start() -> Result<RedisServer, RedisError> {
        let mut last = String::new();
        // The free port can be taken between the probe and the bind: try a few.
        for _ in 0..3 {
            let port = free_port().map_err(|e| RedisError::Failed(e.to_string()))?;
            let mut server = RedisServer { port, child: None };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(RedisError::NotInstalled) => return Err(RedisError::NotInstalled),
                Err(RedisError::Failed(reason)) => last = reason,
            }
        }
        Err(RedisError::Failed(last))
    }

    fn spawn(&mut self) -> Result<(), RedisError> {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RedisError::NotInstalled)
            }
            Err(e) => return Err(RedisError::Failed(e.to_string())),
        };
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if answers_ping(self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(RedisError::Failed(format!("exited with {status}")));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RedisError::Failed(format!(
                    "no answer on port {} within {START_DEADLINE:?}",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (a crash: clients see their connections reset).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (it keeps nothing on disk).
    pub fn restart(&mut self) -> Result<(), RedisError> {
        self.stop();
        self.spawn()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
