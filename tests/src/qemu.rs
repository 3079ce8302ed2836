//! Running rhv in QEMU and talking to its serial console.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use regex_lite::Regex;

use crate::contract::{self, Banner, PROMPT};
use crate::slots::Slot;
use crate::stream::{tail, Stream};
use crate::{scaled, Error};

/// How much of the transcript an error shows.
pub const TAIL_BYTES: usize = 2048;

/// The PXE boot file inside the TFTP tree.
pub const PXE_BOOTFILE: &str = image_tools::PXE_BOOTFILE;

/// How the machine boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// QEMU's multiboot1 loader: `-kernel ELF [-append ..] [-initrd a,b]`.
    Kernel(PathBuf),
    /// SeaBIOS → GRUB from a CD: `-cdrom ISO`.
    Iso(PathBuf),
    /// SeaBIOS → iPXE (e1000) → GRUB's core.0 over TFTP from this tree.
    Pxe(PathBuf),
}

/// The accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's emulator: every boot path works.
    Tcg,
    /// KVM; on kvm_pvm machines only sensible with `-kernel`.
    Kvm,
}

impl Accel {
    /// TCG, unless `RHV_ACCEL=kvm`, the boot is `-kernel` and /dev/kvm is
    /// usable (GRUB and iPXE crawl or hang under kvm_pvm).
    pub fn from_env(boot: &Boot) -> Accel {
        let want_kvm = std::env::var("RHV_ACCEL").is_ok_and(|v| v.eq_ignore_ascii_case("kvm"));
        if want_kvm && matches!(boot, Boot::Kernel(_)) && kvm_usable() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// Whether /dev/kvm can be opened read-write.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok()
}

/// Whether the KVM module is kvm_pvm (page-table-based, no VMX/SVM), under
/// which firmware and GRUB crawl: see the platform notes.
pub fn kvm_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// Builds a QEMU command line; [`QemuBuilder::spawn`] starts it.
#[derive(Debug, Clone)]
pub struct QemuBuilder {
    boot: Boot,
    append: Option<String>,
    initrd: Vec<PathBuf>,
    memory: String,
    no_reboot: bool,
    accel: Accel,
    extra: Vec<String>,
    name: String,
    prefix: Vec<String>,
}

impl QemuBuilder {
    /// A machine booting `boot`, with the harness defaults: TCG (see
    /// [`Accel::from_env`]), 256M, `-no-reboot`, isa-debug-exit.
    pub fn new(boot: Boot) -> Self {
        QemuBuilder {
            accel: Accel::from_env(&boot),
            name: match &boot {
                Boot::Kernel(_) => "kernel",
                Boot::Iso(_) => "iso",
                Boot::Pxe(_) => "pxe",
            }
            .to_string(),
            boot,
            append: None,
            initrd: Vec::new(),
            memory: "256M".into(),
            no_reboot: true,
            extra: Vec::new(),
            prefix: Vec::new(),
        }
    }

    /// Runs QEMU through a wrapper, e.g. `ip netns exec NS` so it can open
    /// a rig's taps (see `Rig::qemu_prefix`). The wrapper must exec QEMU in
    /// place so the harness's PID is QEMU's.
    pub fn prefix(mut self, prefix: Vec<String>) -> Self {
        self.prefix = prefix;
        self
    }

    /// `-kernel ELF`.
    pub fn kernel(elf: impl Into<PathBuf>) -> Self {
        Self::new(Boot::Kernel(elf.into()))
    }

    /// `-cdrom ISO`.
    pub fn iso(iso: impl Into<PathBuf>) -> Self {
        Self::new(Boot::Iso(iso.into()))
    }

    /// Network boot from the TFTP tree `dir`.
    pub fn pxe(dir: impl Into<PathBuf>) -> Self {
        Self::new(Boot::Pxe(dir.into()))
    }

    /// The kernel command line (`-kernel` boots only).
    pub fn append(mut self, cmdline: impl Into<String>) -> Self {
        self.append = Some(cmdline.into());
        self
    }

    /// Adds a multiboot module (`-kernel` boots only; no commas in paths).
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrd.push(path.into());
        self
    }

    /// Guest memory, e.g. `512M`.
    pub fn memory(mut self, m: impl Into<String>) -> Self {
        self.memory = m.into();
        self
    }

    /// Whether a guest reset ends QEMU (default true).
    pub fn no_reboot(mut self, yes: bool) -> Self {
        self.no_reboot = yes;
        self
    }

    /// Forces an accelerator.
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// The accelerator that will be used.
    pub fn accel_in_use(&self) -> Accel {
        self.accel
    }

    /// Appends a raw QEMU argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// A label for error messages and the echo prefix.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The QEMU binary: `RHV_QEMU`, else `qemu-system-x86_64`.
    pub fn program() -> String {
        std::env::var("RHV_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
    }

    /// QEMU's arguments (without the program name).
    pub fn argv(&self) -> Result<Vec<String>, Error> {
        let mut a: Vec<String> = vec!["-accel".into(), self.accel.name().into()];
        for s in ["-display", "none", "-monitor", "none", "-serial", "stdio"] {
            a.push(s.into());
        }
        if self.no_reboot {
            a.push("-no-reboot".into());
        }
        a.push("-device".into());
        a.push("isa-debug-exit,iobase=0xf4,iosize=0x04".into());
        a.push("-m".into());
        a.push(self.memory.clone());
        let path = |p: &Path| p.to_string_lossy().into_owned();
        match &self.boot {
            Boot::Kernel(elf) => {
                a.push("-kernel".into());
                a.push(path(elf));
                if let Some(cmdline) = &self.append {
                    a.push("-append".into());
                    a.push(cmdline.clone());
                }
                if !self.initrd.is_empty() {
                    let list: Vec<String> = self.initrd.iter().map(|p| path(p)).collect();
                    if list.iter().any(|p| p.contains(',')) {
                        return Err(Error::Setup(format!("-initrd paths may not contain ',': {list:?}")));
                    }
                    a.push("-initrd".into());
                    a.push(list.join(","));
                }
            }
            Boot::Iso(iso) | Boot::Pxe(iso) if self.append.is_some() || !self.initrd.is_empty() => {
                return Err(Error::Setup(format!(
                    "-append/-initrd only work with -kernel; bake the command line and modules into {} with rhv-image",
                    iso.display()
                )));
            }
            Boot::Iso(iso) => {
                a.push("-cdrom".into());
                a.push(path(iso));
                a.push("-boot".into());
                a.push("d".into());
            }
            Boot::Pxe(dir) => {
                if path(dir).contains(',') {
                    return Err(Error::Setup(format!("TFTP directory may not contain ',': {}", dir.display())));
                }
                a.push("-netdev".into());
                a.push(format!("user,id=n0,tftp={},bootfile={PXE_BOOTFILE}", path(dir)));
                a.push("-device".into());
                a.push("e1000,netdev=n0".into());
                a.push("-boot".into());
                a.push("n".into());
            }
        }
        a.extend(self.extra.iter().cloned());
        Ok(a)
    }

    /// Starts QEMU once a run slot is free (see [`crate::slots`]).
    pub fn spawn(self) -> Result<Qemu, Error> {
        let argv = self.argv()?;
        let (Boot::Kernel(p) | Boot::Iso(p) | Boot::Pxe(p)) = &self.boot;
        if !p.exists() {
            return Err(Error::Setup(format!("{} is missing: run scripts/build first", p.display())));
        }
        let slot = Slot::acquire(scaled(Duration::from_secs(1800)))
            .ok_or_else(|| Error::Setup("no free QEMU slot within 30 minutes (a test leaked one?)".into()))?;
        let program = Self::program();
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let mut child =
            cmd.args(&argv).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(
                |e| {
                    Error::Setup(format!(
                        "cannot start {program}: {e} (install qemu-system-x86, or run scripts/build which does)"
                    ))
                },
            )?;
        let started = Instant::now();
        let echo = std::env::var_os("RHV_TEST_ECHO").map(|_| format!("[{}] ", self.name));
        let out = Stream::new(echo);
        let err = Stream::new(None);
        // The pipes exist: we asked for all three above.
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let stdin = child.stdin.take();
        if let Some(s) = stdout {
            let o = Arc::clone(&out);
            std::thread::spawn(move || o.pump(s));
        } else {
            out.close();
        }
        if let Some(s) = stderr {
            let e = Arc::clone(&err);
            std::thread::spawn(move || e.pump(s));
        } else {
            err.close();
        }
        Ok(Qemu {
            child,
            input: Input(Arc::new(Mutex::new(stdin))),
            out,
            err,
            cursor: 0,
            started,
            exit: None,
            name: self.name,
            argv,
            _slot: Some(slot),
        })
    }
}

/// Something [`Qemu::expect`] can wait for.
pub trait Pattern {
    /// The byte range of the first match in `hay`.
    fn find_in(&self, hay: &str) -> Option<(usize, usize)>;
    /// For literal text, its length: lets the search resume near where the
    /// last one stopped instead of rescanning.
    fn literal_len(&self) -> Option<usize> {
        None
    }
    /// For messages.
    fn describe(&self) -> String;
}

impl Pattern for &str {
    fn find_in(&self, hay: &str) -> Option<(usize, usize)> {
        hay.find(*self).map(|i| (i, i + self.len()))
    }
    fn literal_len(&self) -> Option<usize> {
        Some(self.len())
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl Pattern for String {
    fn find_in(&self, hay: &str) -> Option<(usize, usize)> {
        self.as_str().find_in(hay)
    }
    fn literal_len(&self) -> Option<usize> {
        Some(self.len())
    }
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

impl Pattern for &Regex {
    fn find_in(&self, hay: &str) -> Option<(usize, usize)> {
        self.find(hay).map(|m| (m.start(), m.end()))
    }
    fn describe(&self) -> String {
        format!("/{}/", self.as_str())
    }
}

impl Pattern for Regex {
    fn find_in(&self, hay: &str) -> Option<(usize, usize)> {
        (&self).find_in(hay)
    }
    fn describe(&self) -> String {
        (&self).describe()
    }
}

/// A cloneable handle on QEMU's stdin (the serial console input), for
/// writer threads.
#[derive(Debug, Clone)]
pub struct Input(Arc<Mutex<Option<ChildStdin>>>);

impl Input {
    /// Writes `bytes` to the console (blocks while QEMU's pipe is full).
    pub fn send(&self, bytes: &[u8]) -> Result<(), Error> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let stdin = guard.as_mut().ok_or_else(|| Error::Setup("QEMU's stdin is closed".into()))?;
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::Setup(format!("writing to QEMU's serial console: {e}")))
    }

    fn close(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A running QEMU. Dropping it kills QEMU (SIGKILL to its PID) and reaps it.
pub struct Qemu {
    child: Child,
    input: Input,
    out: Arc<Stream>,
    err: Arc<Stream>,
    cursor: usize,
    started: Instant,
    exit: Option<ExitStatus>,
    name: String,
    argv: Vec<String>,
    _slot: Option<Slot>,
}

impl std::fmt::Debug for Qemu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qemu")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("argv", &self.argv)
            .finish()
    }
}

impl Qemu {
    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The arguments QEMU was started with.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The whole serial transcript so far.
    pub fn transcript(&self) -> String {
        self.out.lock().text.clone()
    }

    /// What QEMU wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.err.lock().text.clone()
    }

    /// The serial output not yet consumed by an `expect`.
    pub fn unconsumed(&self) -> String {
        self.out.lock().text[self.cursor..].to_string()
    }

    fn failure(&self, what: String, waited: Duration, text: &str, exited: bool) -> Error {
        let stderr = self.stderr();
        let ctx = crate::Context {
            what,
            name: self.name.clone(),
            waited,
            tail: tail(text, TAIL_BYTES).to_string(),
            stderr: tail(&stderr, TAIL_BYTES).to_string(),
            argv: self.argv.join(" "),
        };
        if exited {
            Error::Exited(Box::new(ctx))
        } else {
            Error::Timeout(Box::new(ctx))
        }
    }

    /// Waits up to `timeout` (scaled, see [`crate::scaled`]) for `pattern`
    /// in the output after the cursor; returns the text from the cursor to
    /// the end of the match and moves the cursor past it. Fails at once if
    /// QEMU exits first.
    pub fn expect<P: Pattern>(&mut self, pattern: P, timeout: Duration) -> Result<String, Error> {
        let timeout = scaled(timeout);
        let start = Instant::now();
        let cursor = self.cursor;
        let lit = pattern.literal_len();
        // Where a literal search may resume: output before it was searched.
        let mut resume = cursor;
        let mut found = None;
        let (st, _) = self.out.wait_until(start + timeout, |st| {
            let mut from = resume;
            while !st.text.is_char_boundary(from) {
                from -= 1;
            }
            if let Some((s, e)) = pattern.find_in(&st.text[from..]) {
                found = Some((from + s, from + e));
                return true;
            }
            if let Some(len) = lit {
                resume = st.text.len().saturating_sub(len).max(cursor);
            }
            st.eof
        });
        match found {
            Some((_, end)) => {
                let consumed = st.text[cursor..end].to_string();
                drop(st);
                self.cursor = end;
                Ok(consumed)
            }
            None => {
                let text = st.text.clone();
                let eof = st.eof;
                drop(st);
                Err(self.failure(format!("waiting for {}", pattern.describe()), start.elapsed(), &text, eof))
            }
        }
    }

    /// Like [`Qemu::expect`] for a regex, returning its capture groups
    /// (index 0 is the whole match; unmatched groups are empty).
    pub fn expect_captures(&mut self, re: &Regex, timeout: Duration) -> Result<Vec<String>, Error> {
        let consumed = self.expect(re, timeout)?;
        // The match ends the consumed text; find it again to capture.
        let caps = re
            .captures_iter(&consumed)
            .last()
            .ok_or_else(|| Error::Setup(format!("regex /{}/ did not re-match", re.as_str())))?;
        Ok(caps.iter().map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default()).collect())
    }

    /// Sends raw bytes to the serial console.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.input.send(bytes)
    }

    /// Sends `line` followed by a carriage return (the Enter key).
    pub fn send_line(&mut self, line: &str) -> Result<(), Error> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\r');
        self.send(&bytes)
    }

    /// A handle for writing from another thread.
    pub fn input(&self) -> Input {
        self.input.clone()
    }

    /// Moves the cursor to the end of what has arrived so far.
    pub fn skip_received(&mut self) {
        self.cursor = self.out.lock().text.len();
    }

    /// Waits for the boot banner and then the prompt.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<Banner, Error> {
        let deadline = Instant::now() + scaled(timeout);
        let banner = contract::re(contract::BANNER_RE);
        let text = self.expect(&banner, timeout)?;
        let parsed =
            contract::parse_banner(&text).ok_or_else(|| Error::Setup(format!("banner did not parse: {text:?}")))?;
        let left = deadline.saturating_duration_since(Instant::now());
        self.expect(PROMPT, left.max(Duration::from_secs(5)))?;
        Ok(parsed)
    }

    /// Runs a shell command: sends it, waits for the next prompt and returns
    /// the output between the echoed command line and that prompt, with
    /// `\r\n` turned into `\n`.
    pub fn command(&mut self, cmd: &str, timeout: Duration) -> Result<String, Error> {
        self.send_line(cmd)?;
        let text = self.expect(PROMPT, timeout)?;
        Ok(command_output(&text))
    }

    /// Attaches to domain `dom`'s console (its backlog is replayed), waits up
    /// to `timeout` for `pattern`, detaches with Ctrl-] and waits for the
    /// prompt; returns the console text up to the match.
    pub fn on_console<P: Pattern>(&mut self, dom: &str, pattern: P, timeout: Duration) -> Result<String, Error> {
        self.send_line(&format!("console {dom}"))?;
        let got = self.expect(pattern, timeout)?;
        self.send(b"\x1d")?;
        self.expect(PROMPT, crate::timeouts::COMMAND)?;
        Ok(got)
    }

    /// Waits up to `timeout` for QEMU to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_some() {
            return self.exit;
        }
        let deadline = Instant::now() + scaled(timeout);
        // QEMU's stdout closes when it exits: wait for that first.
        drop(self.out.wait_until(deadline, |st| st.eof));
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.exit = Some(status);
                    self.input.close();
                    return self.exit;
                }
                Ok(None) if Instant::now() < deadline => {
                    // The process closed its pipes and is being torn down;
                    // poll its status briefly.
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return None,
            }
        }
    }

    /// Like [`Qemu::wait_exit`], as an error with the transcript on timeout.
    pub fn expect_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let start = Instant::now();
        match self.wait_exit(timeout) {
            Some(s) => Ok(s),
            None => {
                let text = self.transcript();
                Err(self.failure("waiting for QEMU to exit".into(), start.elapsed(), &text, false))
            }
        }
    }
}

/// The output part of a command's transcript: after the first line (the
/// echo), without the trailing prompt, `\r\n` → `\n`.
pub fn command_output(consumed: &str) -> String {
    let body = consumed.strip_suffix(PROMPT).unwrap_or(consumed);
    let body = match body.find('\n') {
        Some(i) => &body[i + 1..],
        None => "",
    };
    body.replace("\r\n", "\n")
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.input.close();
        if self.exit.is_none() {
            // Kill this process by its PID and reap it; never by name.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(b: &QemuBuilder) -> String {
        b.argv().unwrap().join(" ")
    }

    #[test]
    fn kernel_argv() {
        let b = QemuBuilder::kernel("/x/h.elf")
            .accel(Accel::Tcg)
            .append("console=ttyS0 marker=77")
            .initrd("/m/a")
            .initrd("/m/b");
        let a = b.argv().unwrap();
        assert_eq!(
            a.join(" "),
            "-accel tcg -display none -monitor none -serial stdio -no-reboot \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -m 256M -kernel /x/h.elf \
             -append console=ttyS0 marker=77 -initrd /m/a,/m/b"
        );
        // The command line is one argument.
        assert!(a.contains(&"console=ttyS0 marker=77".to_string()));
    }

    #[test]
    fn iso_and_pxe_argv() {
        let iso = QemuBuilder::iso("/i/h.iso").no_reboot(false).memory("512M");
        assert_eq!(iso.accel_in_use(), Accel::Tcg);
        let s = args(&iso);
        assert!(s.ends_with("-m 512M -cdrom /i/h.iso -boot d"), "{s}");
        assert!(!s.contains("-no-reboot"));
        let s = args(&QemuBuilder::pxe("/t/pxe"));
        assert!(
            s.ends_with(
                "-netdev user,id=n0,tftp=/t/pxe,bootfile=boot/grub/i386-pc/core.0 \
                 -device e1000,netdev=n0 -boot n"
            ),
            "{s}"
        );
        assert!(s.starts_with("-accel tcg "));
    }

    #[test]
    fn bad_combinations_are_refused() {
        assert!(QemuBuilder::iso("/i.iso").append("x").argv().is_err());
        assert!(QemuBuilder::kernel("/k").initrd("/a,b").argv().is_err());
        assert!(QemuBuilder::pxe("/p,q").argv().is_err());
    }

    #[test]
    fn kvm_only_for_kernel_boots() {
        // Whatever RHV_ACCEL says, ISO and PXE boots use TCG.
        assert_eq!(Accel::from_env(&Boot::Iso("/x".into())), Accel::Tcg);
        assert_eq!(Accel::from_env(&Boot::Pxe("/x".into())), Accel::Tcg);
        let s = args(&QemuBuilder::kernel("/k").accel(Accel::Kvm));
        assert!(s.starts_with("-accel kvm "));
        assert!(!s.contains("-cpu"));
    }

    #[test]
    fn command_output_strips_echo_and_prompt() {
        assert_eq!(command_output("help\r\nline 1\r\nline 2\r\nrhv> "), "line 1\nline 2\n");
        assert_eq!(command_output("x\r\nrhv> "), "");
        assert_eq!(command_output("rhv> "), "");
    }

    /// Drives the harness with `sh` standing in for QEMU: the matching,
    /// cursor, send, exit and timeout logic without a VM.
    fn fake(script: &str) -> Qemu {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Stream::new(None);
        let err = Stream::new(None);
        let (o, e) = (Arc::clone(&out), Arc::clone(&err));
        let (so, se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        std::thread::spawn(move || o.pump(so));
        std::thread::spawn(move || e.pump(se));
        Qemu {
            input: Input(Arc::new(Mutex::new(child.stdin.take()))),
            child,
            out,
            err,
            cursor: 0,
            started: Instant::now(),
            exit: None,
            name: "fake".into(),
            argv: vec![script.into()],
            _slot: None,
        }
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn expect_consumes_in_order() {
        let mut q = fake("printf 'a1 b2 a3\\n'; exec cat");
        assert_eq!(q.expect("a", T).unwrap(), "a");
        assert_eq!(q.expect("a", T).unwrap(), "1 b2 a");
        let re = Regex::new(r"(\d)").unwrap();
        assert_eq!(q.expect_captures(&re, T).unwrap(), vec!["3", "3"]);
        q.send_line("echoed").unwrap();
        // `cat` echoes stdin back.
        assert!(q.expect("echoed\r", T).unwrap().ends_with("echoed\r"));
    }

    #[test]
    fn expect_fails_fast_when_process_exits() {
        let mut q = fake("echo bye; echo oops >&2");
        let start = Instant::now();
        let e = q.expect("never", Duration::from_secs(60)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(30));
        let msg = e.to_string();
        assert!(matches!(e, Error::Exited(_)), "{msg}");
        assert!(msg.contains("bye") && msg.contains("oops") && msg.contains("never"), "{msg}");
        assert_eq!(q.wait_exit(T).and_then(|s| s.code()), Some(0));
    }

    #[test]
    fn timeout_error_has_tail() {
        let mut q = fake("head -c 5000 /dev/zero | tr '\\0' x; printf END; exec cat");
        q.expect("END", T).unwrap();
        let e = q.expect("nope", Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, Error::Timeout(_)));
        let Error::Timeout(ctx) = &e else { unreachable!() };
        assert!(ctx.tail.len() <= TAIL_BYTES && ctx.tail.ends_with("END"));
        assert!(q.wait_exit(Duration::from_millis(50)).is_none());
        let pid = q.pid();
        drop(q);
        // Killed and reaped: no such process any more.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn exit_status_is_reported() {
        let mut q = fake("exit 33");
        assert_eq!(q.wait_exit(T).and_then(|s| s.code()), Some(33));
        assert_eq!(q.expect_exit(T).unwrap().code(), Some(33));
    }

    #[test]
    fn literal_split_across_reads_is_found() {
        let mut q = fake("printf 'ab'; read x; printf 'cd'; exec cat");
        let e = q.expect("abcd", Duration::from_millis(200));
        assert!(e.is_err());
        q.send(b"go\n").unwrap();
        assert_eq!(q.expect("abcd", T).unwrap(), "abcd");
    }
}
