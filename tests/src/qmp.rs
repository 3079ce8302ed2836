//! A minimal QMP client (QEMU's JSON machine protocol) for tests that need
//! to act on the machine from outside: inject an NMI, a machine check.
//!
//! [`Qmp::socket_arg`] gives the `-qmp` argument for a socket in a fresh
//! temporary directory; after spawning, [`Qmp::connect`] waits for QEMU to
//! listen, negotiates capabilities, and [`Qmp::execute`] runs one command
//! and returns its reply line. Replies and events are one JSON object per
//! line; events are skipped.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{Error, TempDir};

/// A QMP connection to one QEMU.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Where a QEMU's QMP socket will be; keep it alive as long as the QEMU.
pub struct QmpSocket {
    dir: TempDir,
}

impl QmpSocket {
    /// A socket path in a new temporary directory.
    pub fn new() -> Result<Self, Error> {
        let dir = TempDir::new("qmp").map_err(|e| Error::Setup(format!("cannot create a QMP directory: {e}")))?;
        Ok(QmpSocket { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }

    /// The two QEMU arguments that make it listen there.
    pub fn args(&self) -> [String; 2] {
        ["-qmp".into(), format!("unix:{},server=on,wait=off", self.path().display())]
    }
}

fn setup(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("QMP: {what}: {e}"))
}

impl Qmp {
    /// Connects (QEMU creates the socket shortly after it starts) and
    /// leaves capability negotiation mode.
    pub fn connect(socket: &QmpSocket, timeout: Duration) -> Result<Qmp, Error> {
        let deadline = Instant::now() + crate::scaled(timeout);
        let stream = loop {
            match UnixStream::connect(socket.path()) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(setup("connect", e)),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(crate::scaled(timeout))).map_err(|e| setup("timeout", e))?;
        let writer = stream.try_clone().map_err(|e| setup("clone", e))?;
        let mut q = Qmp { reader: BufReader::new(stream), writer };
        let greeting = q.line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(setup("greeting", greeting));
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn line(&mut self) -> Result<String, Error> {
        let mut l = String::new();
        match self.reader.read_line(&mut l) {
            Ok(0) => Err(setup("read", "connection closed")),
            Ok(_) => Ok(l),
            Err(e) => Err(setup("read", e)),
        }
    }

    /// Runs `command` with optional JSON `arguments`; returns the reply
    /// line, or an error carrying QEMU's error reply.
    pub fn execute(&mut self, command: &str, arguments: Option<&str>) -> Result<String, Error> {
        let msg = match arguments {
            Some(a) => format!("{{\"execute\":\"{command}\",\"arguments\":{a}}}\n"),
            None => format!("{{\"execute\":\"{command}\"}}\n"),
        };
        self.writer.write_all(msg.as_bytes()).map_err(|e| setup("write", e))?;
        loop {
            let l = self.line()?;
            if l.contains("\"return\"") {
                return Ok(l);
            }
            if l.contains("\"error\"") {
                return Err(setup(command, l.trim()));
            }
            // An asynchronous event: not our reply.
        }
    }

    /// A human-monitor (HMP) command through QMP; returns its output.
    pub fn hmp(&mut self, command_line: &str) -> Result<String, Error> {
        let escaped = command_line.replace('\\', "\\\\").replace('"', "\\\"");
        self.execute("human-monitor-command", Some(&format!("{{\"command-line\":\"{escaped}\"}}")))
    }
}
