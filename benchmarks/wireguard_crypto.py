"""Packets per second through WireGuard encrypt + decrypt on one core, 1420-byte inner packets.

Baseline in the same run: the raw ChaCha20-Poly1305 seal + open of the same bytes with `cryptography`, i.e.
the floor no Python WireGuard can beat. Usage: python benchmarks/wireguard_crypto.py [--seconds S]
"""

from __future__ import annotations

import argparse
import ipaddress
import struct
import time

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgmagic.wireguard import crypto
from wgmagic.wireguard.device import Device

SIZE = 1420


def inner_packet(size: int) -> bytes:
    payload = bytes(size - 20)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, 17, 0, bytes((10, 9, 0, 1)),
                       bytes((10, 0, 0, 5))) + payload


def device_pair() -> tuple[Device, Device]:
    a_key, b_key = crypto.generate_private_key(), crypto.generate_private_key()
    a, b = Device(a_key), Device(b_key)
    a.add_peer(crypto.public_key(b_key), endpoint=("127.0.0.1", 2), allowed_ips=[ipaddress.ip_network("10.0.0.0/24")])
    b.add_peer(crypto.public_key(a_key), allowed_ips=[ipaddress.ip_network("10.9.0.0/24")])
    a.send_packet(inner_packet(SIZE), 0.0)
    for _ in range(4):
        for data, _ in a.datagrams_to_send():
            b.receive_datagram(data, ("127.0.0.1", 1), 0.0)
        for data, _ in b.datagrams_to_send():
            a.receive_datagram(data, ("127.0.0.1", 2), 0.0)
    b.packets_received()
    return a, b


def bench_device(seconds: float) -> float:
    a, b = device_pair()
    packet = inner_packet(SIZE)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(256):
            a.send_packet(packet, 1.0)
        for data, addr in a.datagrams_to_send():
            b.receive_datagram(data, addr, 1.0)
        count += len(b.packets_received())
    assert not b.drops, b.drops
    return count / (time.perf_counter() - started)


def bench_raw_aead(seconds: float) -> float:
    aead_send, aead_recv = ChaCha20Poly1305(bytes(32)), ChaCha20Poly1305(bytes(32))
    packet = inner_packet(SIZE)
    count, started, counter = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        for _ in range(256):
            nonce = bytes(4) + counter.to_bytes(8, "little")
            aead_recv.decrypt(nonce, aead_send.encrypt(nonce, packet, None), None)
            counter += 1
        count += 256
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    raw = bench_raw_aead(args.seconds)
    device = bench_device(args.seconds)
    print(f"raw ChaCha20-Poly1305 seal+open, {SIZE} B: {raw:,.0f} packets/s")
    print(f"wgmagic Device A.send_packet -> B.receive_datagram, {SIZE} B: {device:,.0f} packets/s "
          f"({device * SIZE * 8 / 1e9:.2f} Gbit/s of inner packets)")
    print(f"ratio device/raw: {device / raw:.2f}")


if __name__ == "__main__":
    main()
