#!/usr/bin/env python3
"""Drives the serial consoles of scripts/demo's two hypervisors.

usage: demo_driver.py --host NAME IP ARGV_FILE --host NAME IP ARGV_FILE

Each ARGV_FILE holds a QEMU command line, NUL-separated (scripts/demo writes
them); QEMU must put the serial console on stdio. The driver starts both
machines, echoes everything they print with a `[NAME]` prefix, types the
seed scenario's commands at their `rhv> ` prompts and checks what comes
back: create rx7 from the xl.cfg on the share, list, console, block-list,
a cold migration to the second host, a live migration back, list and
console again. Every wait has a timeout (RHV_TIMEOUT_SCALE=N stretches
them). Exit status 0 only if every expected line appeared; on the first
failure it prints `demo: FAILED: <what>` and exits 1. The QEMUs are killed
(by PID) when the driver ends; scripts/demo removes the rest.

Python 3 standard library only.
"""
import argparse
import codecs
import os
import re
import signal
import subprocess
import sys
import threading
import time

PROMPT = "rhv> "
BANNER = re.compile(r"rhv v\S+ \(build \S+\) up in [0-9.]+ ms")
CSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
CTRL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
LOG_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")
CTRL_RBRACKET = b"\x1d"  # Ctrl-]: leave a domain's console

try:
    SCALE = max(1.0, float(os.environ.get("RHV_TIMEOUT_SCALE", "1") or "1"))
except ValueError:
    SCALE = 1.0

OUT_LOCK = threading.Lock()


def say(text=""):
    with OUT_LOCK:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def step(text):
    say()
    say("=== " + text)


class DemoError(Exception):
    pass


class Host:
    """One QEMU running rhv, its serial console on a pair of pipes."""

    def __init__(self, name, ip, argv):
        self.name = name
        self.ip = ip
        self.buf = ""
        self.cursor = 0
        self.eof = False
        self.cond = threading.Condition()
        self.partial = ""
        self.held_prompt = False
        self.stopping = False
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
        )
        self.pid = self.proc.pid
        threading.Thread(target=self._pump_out, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _echo(self, text, final=False):
        # Whole lines, prefixed; a partial line waits for its newline. A log
        # line printed while the prompt waits for input comes out as
        # "rhv> [ t] ..." with the next command's echo on a line of its own;
        # shown as the log line, then "rhv> command".
        self.partial += text
        *lines, self.partial = self.partial.split("\n")
        if final and self.partial.replace("\r", "") not in ("", PROMPT):
            lines.append(self.partial)
        for line in lines:
            line = CTRL.sub("", CSI.sub("", line.replace("\r", "")))
            if line.startswith(PROMPT) and LOG_LINE.match(line[len(PROMPT) :]):
                line = line[len(PROMPT) :]
                self.held_prompt = True
            elif self.held_prompt and not LOG_LINE.match(line):
                if not line.startswith(PROMPT):
                    line = PROMPT + line
                self.held_prompt = False
            say(f"[{self.name}] {line}")

    def _pump_out(self):
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            text = dec.decode(chunk, final=not chunk)
            # Shown before a waiter can see it: a step's output never
            # trails the next step's heading.
            self._echo(text, final=not chunk)
            with self.cond:
                self.buf += text
                if not chunk:
                    self.eof = True
                self.cond.notify_all()
            if not chunk:
                return

    def _pump_err(self):
        for raw in iter(self.proc.stderr.readline, b""):
            if self.stopping and b"terminating on signal" in raw:
                continue
            say(f"[{self.name} qemu] {raw.decode('utf-8', 'replace').rstrip()}")

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except OSError as e:
            raise DemoError(f"{self.name}: cannot write to the serial console: {e}") from e

    def skip_received(self):
        with self.cond:
            self.cursor = len(self.buf)

    def expect(self, pattern, timeout, what):
        """Waits for `pattern` (a regex or a plain string) in what arrived
        after the cursor; moves the cursor past it. Returns (text up to and
        including the match, match)."""
        rx = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        limit = timeout * SCALE
        deadline = time.monotonic() + limit
        with self.cond:
            while True:
                m = rx.search(self.buf, self.cursor)
                if m:
                    text = self.buf[self.cursor : m.end()]
                    self.cursor = m.end()
                    return text, m
                if self.eof:
                    try:
                        rc = self.proc.wait(2)
                    except subprocess.TimeoutExpired:
                        rc = "unknown"
                    raise DemoError(f"{self.name}: QEMU exited (status {rc}) while waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(f"{self.name}: timed out after {limit:.0f} s waiting for {what}")
                self.cond.wait(min(left, 0.5))

    def command(self, cmd, timeout=30, what=None):
        """Types `cmd` and Enter; waits for its echo and the next prompt.
        Returns the output between them (newlines normalised)."""
        self.skip_received()
        self.send(cmd + "\r")
        self.expect(re.compile(re.escape(cmd) + r"\r?\n"), 10, f"the echo of '{cmd}'")
        text, _ = self.expect(PROMPT, timeout, what or f"prompt after '{cmd}'")
        return text[: -len(PROMPT)].replace("\r\n", "\n")

    def kill(self):
        if self.proc.poll() is None:
            self.stopping = True
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            say(f"--- {self.name}: QEMU pid {self.pid} stopped")


def list_row(out, name):
    """(id, cols) of `name`'s row in `list` output, or None."""
    for line in out.splitlines():
        cols = line.split()
        if cols and cols[0] == name and len(cols) >= 6:
            return int(cols[1]), cols
    return None


def console_beats(h, dom, min_seq, timeout=60):
    """Attaches to `dom`'s console on `h`, waits for a heartbeat with
    seq >= min_seq (the backlog is replayed first), detaches with Ctrl-].
    Returns (last seq, whether `time-changed` was printed)."""
    h.skip_received()
    h.send(f"console {dom}\r")
    h.expect(re.compile(r"\[attached to domain \d+"), 10, f"'console {dom}' attaching")
    beat = re.compile(rf"heartbeat {re.escape(dom)} seq=(\d+) t=[0-9.]+")
    seen = ""
    seq = 0
    while seq < min_seq:
        text, m = h.expect(beat, timeout, f"heartbeat seq>={min_seq} from {dom}")
        seen += text
        seq = int(m.group(1))
    h.send(CTRL_RBRACKET)
    h.expect(PROMPT, 10, "the prompt after Ctrl-]")
    return seq, f"heartbeat {dom} time-changed" in seen


def check(cond, msg):
    if not cond:
        raise DemoError(msg)


def scenario(a, b, dom="rx7"):
    t0 = time.monotonic()
    step(f"Boot: {a.name} ({a.ip}) and {b.name} ({b.ip}) mount /var/xen over NFS and serve relocation")
    for h in (a, b):
        text, _ = h.expect(BANNER, 60, "boot banner")
        check("nfs: mounted" in text, f"{h.name}: /var/xen was not mounted at boot")
        check("relocation: listening on port" in text, f"{h.name}: the relocation server did not start")
        h.expect(PROMPT, 10, "the first prompt")
    say(f"--- both hosts up in {time.monotonic() - t0:.1f} s")

    step(f"The guest's config on the share, seen from {b.name}")
    out = b.command("ls -l /var/xen")
    check("rx7.cfg" in out, f"{b.name}: rx7.cfg not on the share")
    b.command("cat /var/xen/rx7.cfg")

    step(f"{a.name}: xm create /var/xen/rx7.cfg")
    out = a.command("create /var/xen/rx7.cfg", 60)
    m = re.search(rf"created domain (\d+) \({dom}\) in", out)
    check(m, f"{a.name}: create failed: {out.strip()}")

    step("xm list on both hosts")
    la, lb = a.command("list"), b.command("list")
    check(list_row(la, dom), f"{dom} missing from {a.name}'s list")
    check(not list_row(lb, dom), f"{dom} unexpectedly on {b.name}")

    step(f"{a.name}: console {dom} (a few heartbeats, then Ctrl-])")
    seq, _ = console_beats(a, dom, 3)

    step(f"{a.name}: block-list {dom} (its disk is a file on the share)")
    out = a.command(f"block-list {dom}")
    check(re.search(r"^0\s+xvda\s+w\s", out, re.M), f"{a.name}: no xvda in block-list: {out.strip()}")

    step(f"Cold migration: {a.name} -> {b.name} (xm migrate {dom} {b.ip})")
    out = a.command(f"migrate {dom} {b.ip}", 180, "the migration report")
    m = re.search(rf"^migrate: {dom} done: cold, .*now domain (\d+) there$", out, re.M)
    check(m, f"cold migration failed: {out.strip()}")
    cold = m.group(0)
    cold_id = int(m.group(1))
    b.expect(re.compile(rf"relocation: domain '{dom}' arrived from {re.escape(a.ip)} as domain {cold_id}\b"), 10,
             f"{b.name}'s arrival log line")

    step("xm list on both hosts: gone from the source, a new ID on the destination")
    la, lb = a.command("list"), b.command("list")
    check(not list_row(la, dom), f"{dom} still on {a.name} after the cold migration")
    rb = list_row(lb, dom)
    check(rb and rb[0] == cold_id, f"{dom} not on {b.name} as domain {cold_id}")

    step(f"{b.name}: console {dom} (still beating; no soft lockup)")
    seq_b, tc_b = console_beats(b, dom, seq + 3)

    step(f"Live migration back: {b.name} -> {a.name} (xm migrate --live {dom} {a.ip})")
    out = b.command(f"migrate --live {dom} {a.ip}", 180, "the migration report")
    m = re.search(rf"^migrate: {dom} done: live, (\d+) round\(s\), .*now domain (\d+) there$", out, re.M)
    check(m, f"live migration failed: {out.strip()}")
    check(re.search(r"^migrate: round 1: ", out, re.M), "live migration printed no rounds")
    live = m.group(0)
    rounds = [l for l in out.splitlines() if l.startswith("migrate: round ")]
    live_id = int(m.group(2))
    a.expect(re.compile(rf"relocation: domain '{dom}' arrived from {re.escape(b.ip)} as domain {live_id}\b"), 10,
             f"{a.name}'s arrival log line")

    step("xm list on both hosts")
    la, lb = a.command("list"), b.command("list")
    ra = list_row(la, dom)
    check(ra and ra[0] == live_id, f"{dom} not on {a.name} as domain {live_id}")
    check(not list_row(lb, dom), f"{dom} still on {b.name} after the live migration")

    step(f"{a.name}: console {dom} (the heartbeat still counting)")
    seq_a, tc_a = console_beats(a, dom, seq_b + 3)

    step("Report")
    say(f"cold: {cold}")
    for r in rounds:
        say(f"live: {r}")
    say(f"live: {live}")
    say(f"heartbeat: seq {seq} on {a.name}, {seq_b} on {b.name} after the cold move, "
        f"{seq_a} on {a.name} after the live move; time-changed seen: "
        f"{'yes' if tc_b else 'no'} (cold), {'yes' if tc_a else 'no'} (live)")
    say(f"demo: PASS ({time.monotonic() - t0:.1f} s from QEMU start)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", nargs=3, action="append", metavar=("NAME", "IP", "ARGV_FILE"), required=True)
    args = ap.parse_args()
    if len(args.host) != 2:
        ap.error("exactly two --host")

    def on_term(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    hosts = []
    try:
        for name, ip, argv_file in args.host:
            with open(argv_file, "rb") as f:
                argv = [x.decode() for x in f.read().split(b"\0") if x]
            hosts.append(Host(name, ip, argv))
            say(f"--- {name}: QEMU pid {hosts[-1].pid}")
        scenario(hosts[0], hosts[1])
        return 0
    except DemoError as e:
        say(f"demo: FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        say("demo: interrupted")
        return 130
    finally:
        for h in hosts:
            h.kill()


if __name__ == "__main__":
    sys.exit(main())
