#!/usr/bin/env python3
"""Sends hostile Ethernet frames out of an interface (run inside a rig's
namespace as root): broadcast ARP requests from random MACs (a MAC/ARP
storm), frames with random bytes and lengths, truncated and lying IPv4
headers, and frames longer than Ethernet allows (they leave only if the
interface's MTU was raised). Bounded: `count` frames of each kind (count/10
oversized ones), then it exits and prints what the kernel let out:

    framestorm: sent N frames (arp=A random=R ipv4=I oversized=O)

Sent on a bridge, broadcast and unknown-unicast frames reach every port.

usage: framestorm.py IFACE COUNT SEED
"""
import random
import socket
import struct
import sys


def mac(rng):
    b = bytearray(rng.getrandbits(8) for _ in range(6))
    b[0] = (b[0] & 0xFE) | 0x02  # unicast, locally administered
    return bytes(b)


def main():
    iface, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    sent = {"arp": 0, "random": 0, "ipv4": 0, "oversized": 0}

    def send(frame, kind):
        try:
            s.send(frame)
            sent[kind] += 1
        except OSError:
            pass  # the kernel refused a size; that is fine

    bcast = b"\xff" * 6
    for _ in range(count):
        src = mac(rng)
        ip = bytes([10, 77, rng.randrange(256), rng.randrange(1, 255)])
        target = bytes([10, 77, rng.randrange(256), rng.randrange(1, 255)])
        arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, ip, b"\0" * 6, target)
        send(bcast + src + b"\x08\x06" + arp, "arp")
    for _ in range(count):
        n = rng.randrange(14, 1515)
        send(bytes(rng.getrandbits(8) for _ in range(n)), "random")
    for _ in range(count):
        src = mac(rng)
        dst = bcast if rng.random() < 0.5 else mac(rng)
        # IPv4 headers that lie: bad IHL, total length beyond the frame, short.
        ver_ihl = rng.choice([0x45, 0x4F, 0x41, 0x46])
        total = rng.choice([20, 60, 1500, 65535])
        hdr = struct.pack("!BBHHHBBH4s4s", ver_ihl, 0, total, 0, 0, 64, rng.choice([1, 6, 17]), 0,
                          bytes([10, 77, 0, 9]), bytes([10, 77, 0, rng.randrange(256)]))
        send(dst + src + b"\x08\x00" + hdr[: rng.randrange(1, len(hdr) + 1)], "ipv4")
    # Oversized frames (the caller raises the interface MTU so they leave).
    for _ in range(count // 10):
        n = rng.randrange(1515, 9000)
        send(mac(rng) + mac(rng) + b"\x08\x00" + bytes(rng.getrandbits(8) for _ in range(n - 14)), "oversized")
    kinds = " ".join(f"{k}={v}" for k, v in sent.items())
    print(f"framestorm: sent {sum(sent.values())} frames ({kinds})")


if __name__ == "__main__":
    main()
