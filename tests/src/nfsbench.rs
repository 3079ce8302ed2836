//! Helpers for the bench's NFS rows: nfs-ganesha inside a rig
//! ([`NfsServer`], stopped on drop), libnfs URLs for Linux's side
//! ([`libnfs_url`]) and a parser for rhv's `nfsbench` output
//! ([`rhv_nfsbench`]).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::rig::Rig;
use crate::{repo_root, Error, Regex};

/// nfs-ganesha serving a directory inside a rig's namespace on the rig's
/// bridge address (scripts/nfs-server); stopped when dropped, so an error
/// between start and the end of a measurement cannot leave it running.
#[derive(Debug)]
pub struct NfsServer {
    ns: String,
    state: PathBuf,
    addr: String,
    export: PathBuf,
}

impl NfsServer {
    /// Starts ganesha in `rig` exporting `export` (read-write), with its
    /// config, log and pid files in `state`.
    pub fn start(rig: &Rig, export: &Path, state: &Path) -> Result<NfsServer, Error> {
        Self::start_with(rig, export, state, &[])
    }

    /// [`NfsServer::start`] with extra `scripts/nfs-server start` options
    /// (`--ro`).
    pub fn start_with(rig: &Rig, export: &Path, state: &Path, extra: &[&str]) -> Result<NfsServer, Error> {
        let out = Command::new(repo_root().join("scripts/nfs-server"))
            .args(["start", rig.ns(), rig.bridge_ip()])
            .arg(export)
            .arg(state)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Setup(format!("scripts/nfs-server: {e}")))?;
        // From here on, dropping `server` stops whatever did start.
        let server = NfsServer {
            ns: rig.ns().to_string(),
            state: state.to_path_buf(),
            addr: rig.bridge_ip().to_string(),
            export: export.to_path_buf(),
        };
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(Error::Setup(format!("nfs-server start failed: {}", why.trim())));
        }
        Ok(server)
    }

    /// The server's address (the rig's bridge).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The exported directory (also the NFSv3 MOUNT path).
    pub fn export(&self) -> &Path {
        &self.export
    }

    /// `ADDR:EXPORT_DIR`, what rhv's `mount` takes.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.addr, self.export.display())
    }

    /// The libnfs URL of `file` in the export.
    pub fn url(&self, file: &str) -> String {
        libnfs_url(&self.addr, &self.export, file)
    }
}

impl Drop for NfsServer {
    fn drop(&mut self) {
        let status = Command::new(repo_root().join("scripts/nfs-server"))
            .args(["stop", &self.ns])
            .arg(&self.state)
            .stdin(Stdio::null())
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("warning: stopping nfs-ganesha in {}: {status:?}", self.ns);
        }
    }
}

/// `nfs://ADDR/EXPORT_DIR/file?nfsport=2049&mountport=20048` (libnfs:
/// `nfs-cp`, `nfs-cat`; for NFSv3 the MOUNT path is the directory itself).
pub fn libnfs_url(addr: &str, export: &Path, file: &str) -> String {
    let export = export.display().to_string();
    let export = export.trim_end_matches('/');
    let file = file.trim_start_matches('/');
    format!("nfs://{addr}{export}/{file}?nfsport=2049&mountport=20048")
}

/// rhv `nfsbench read|write` output: (operation, bytes, ms, MiB/s).
pub fn rhv_nfsbench(text: &str) -> Option<(String, u64, u64, f64)> {
    let c = Regex::new(r"nfsbench: (read|write) (\d+) bytes in (\d+) ms: ([0-9.]+) MiB/s").ok()?.captures(text)?;
    Some((c[1].to_string(), c[2].parse().ok()?, c[3].parse().ok()?, c[4].parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nfsbench() {
        assert_eq!(
            rhv_nfsbench("nfsbench: read 67108864 bytes in 5123 ms: 12.49 MiB/s\n"),
            Some(("read".into(), 67_108_864, 5123, 12.49))
        );
        assert_eq!(
            rhv_nfsbench("nfsbench: write 1048576 bytes in 1000 ms: 1.00 MiB/s"),
            Some(("write".into(), 1 << 20, 1000, 1.0))
        );
        assert_eq!(rhv_nfsbench("error: nfsbench read /var/xen/f: no such file or directory"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            libnfs_url("10.77.0.1", Path::new("/tmp/x/xen/"), "/f"),
            "nfs://10.77.0.1/tmp/x/xen/f?nfsport=2049&mountport=20048"
        );
    }
}
