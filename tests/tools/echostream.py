#!/usr/bin/env python3
"""Streams a deterministic byte pattern to a TCP echo server and checks
every byte that comes back, for a given time: the proof that a guest's TCP
connection survived a live migration without loss or corruption.

usage: echostream.py HOST PORT SECONDS [KIB_PER_S]
Prints `echostream: sent=N verified=N max_stall_ms=M` and exits 0 when every
sent byte came back intact; on a mismatch, a reset or a stall longer than
30 s it prints `echostream: FAILED ...` and exits 1. Python 3 stdlib only.
"""
import select
import socket
import sys
import threading
import time


def pattern(offset, n):
    # Byte i of the stream is (i * 7 + i // 251) % 256: no short period.
    return bytes(((i * 7 + i // 251) & 0xFF) for i in range(offset, offset + n))


def main():
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rate = int(sys.argv[4]) * 1024 if len(sys.argv) > 4 else 256 * 1024
    s = socket.create_connection((host, port), timeout=30)
    s.settimeout(None)
    state = {"sent": 0, "got": 0, "err": None, "last": time.monotonic(), "stall": 0.0}

    def reader():
        while True:
            if state.get("done") and state["got"] >= state["sent"]:
                return
            try:
                ready, _, _ = select.select([s], [], [], 0.5)
                if not ready:
                    if time.monotonic() - state["last"] > 30:
                        state["err"] = "no echo for 30 s (%d of %d bytes back)" % (state["got"], state["sent"])
                        return
                    continue
                b = s.recv(65536)
            except OSError as e:
                state["err"] = "receive: %s" % e
                return
            if not b:
                if state["got"] < state["sent"]:
                    state["err"] = "connection closed with %d bytes missing" % (state["sent"] - state["got"])
                return
            want = pattern(state["got"], len(b))
            if b != want:
                bad = next(i for i in range(len(b)) if b[i] != want[i])
                state["err"] = "byte %d differs" % (state["got"] + bad)
                return
            now = time.monotonic()
            state["stall"] = max(state["stall"], now - state["last"])
            state["last"] = now
            state["got"] += len(b)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    start = time.monotonic()
    chunk = 4096
    try:
        while time.monotonic() - start < seconds and state["err"] is None:
            due = start + state["sent"] / rate
            if time.monotonic() < due:
                time.sleep(min(0.01, due - time.monotonic()))
                continue
            data = pattern(state["sent"], chunk)
            s.sendall(data)
            state["sent"] += len(data)
    except OSError as e:
        state["err"] = "send: %s" % e
    state["done"] = True
    t.join(60)
    if t.is_alive() and state["err"] is None:
        state["err"] = "echo incomplete after 60 s: %d of %d bytes" % (state["got"], state["sent"])
    s.close()
    stall_ms = int(state["stall"] * 1000)
    if state["err"] is not None:
        print("echostream: FAILED %s (sent=%d verified=%d)" % (state["err"], state["sent"], state["got"]))
        return 1
    print("echostream: sent=%d verified=%d max_stall_ms=%d" % (state["sent"], state["got"], stall_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
