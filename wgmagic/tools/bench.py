"""`%wg bench`: throughput down and up, and round-trip latency, through the tunnel.

It speaks a small bench protocol (the test bed's services serve it; a database or `wgmagic gateway` does not),
on three consecutive ports: PORT is a bulk source (send an 8-byte big-endian size, receive that many bytes), PORT+1
echoes bytes back, PORT+2 is a sink (send bytes, half-close, it answers with their SHA-256 in hex).
Everything measured here is bytes that crossed the tunnel, timed on this side.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wgmagic.runtime.tunnel import Tunnel

Progress = Callable[[str, float], None]  # (phase, fraction done)
UNLIMITED = 1 << 50


@dataclass(repr=False)
class BenchResult:
    """What `%wg bench` measured against `target` over `seconds`: bytes and seconds each way (MB/s from
    them), the RTTs (milliseconds) and the throughput timeline (phase, t, MB/s)."""

    target: str
    seconds: float
    download_bytes: int = 0
    download_seconds: float = 0.0
    upload_bytes: int = 0
    upload_seconds: float = 0.0
    rtts_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[str, float, float]] = field(default_factory=list)  # (phase, t, MB/s in that slice)

    def __repr__(self) -> str:
        p50 = self.percentile(50)
        rtt = "-" if p50 is None else f"{p50:.3f} ms"
        return (f"<BenchResult {self.target}: down {self.download_mb_s:.1f} MB/s, up {self.upload_mb_s:.1f} MB/s, "
                f"round trip p50 {rtt}>")

    @property
    def download_mb_s(self) -> float:
        return self.download_bytes / self.download_seconds / 1e6 if self.download_seconds else 0.0

    @property
    def upload_mb_s(self) -> float:
        return self.upload_bytes / self.upload_seconds / 1e6 if self.upload_seconds else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.rtts_ms:
            return None
        ordered = sorted(self.rtts_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]

    def rows(self) -> list[dict[str, object]]:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.3f} ms"
        return [
            {"measure": "download", "result": f"{self.download_mb_s:.1f} MB/s",
             "detail": f"{self.download_bytes / 1e6:.0f} MB in {self.download_seconds:.1f} s"},
            {"measure": "upload", "result": f"{self.upload_mb_s:.1f} MB/s",
             "detail": f"{self.upload_bytes / 1e6:.0f} MB in {self.upload_seconds:.1f} s"},
            {"measure": "round trip p50", "result": ms(self.percentile(50)), "detail": f"{len(self.rtts_ms)} echoes"},
            {"measure": "round trip p90", "result": ms(self.percentile(90)), "detail": ""},
            {"measure": "round trip p99", "result": ms(self.percentile(99)), "detail": ""},
        ]


def run_bench(tunnel: Tunnel, host: str, port: int, seconds: float = 5.0, echoes: int = 500,
              progress: Progress | None = None) -> BenchResult:
    result = BenchResult(f"{host}:{port}", seconds)
    _download(tunnel, host, port, seconds, result, progress)
    _upload(tunnel, host, port + 2, seconds, result, progress)
    _echo(tunnel, host, port + 1, echoes, result, progress)
    return result


class _Phase:
    """Bytes of one direction: totals, a 0.25 s throughput timeline, and progress reports."""

    def __init__(self, name: str, seconds: float, result: BenchResult, progress: Progress | None) -> None:
        self.name, self.seconds, self.result, self.progress = name, seconds, result, progress
        self.started = self.slice_start = time.perf_counter()
        self.slice_bytes = self.total = 0

    def add(self, count: int) -> float:
        """Count `count` bytes; returns the seconds since the phase started."""
        self.total += count
        self.slice_bytes += count
        now = time.perf_counter()
        if now - self.slice_start >= 0.25:
            rate = self.slice_bytes / (now - self.slice_start) / 1e6
            self.result.timeline.append((self.name, now - self.started, rate))
            self.slice_start, self.slice_bytes = now, 0
            if self.progress is not None:
                self.progress(self.name, min(1.0, (now - self.started) / self.seconds))
        return now - self.started

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def _download(tunnel: Tunnel, host: str, port: int, seconds: float, result: BenchResult,
              progress: Progress | None) -> None:
    buffer = bytearray(256 * 1024)
    with tunnel.open_connection(host, port, timeout=15) as sock:
        sock.settimeout(15)
        sock.sendall(struct.pack("!Q", UNLIMITED))
        phase = _Phase("download", seconds, result, progress)
        while (n := sock.recv_into(buffer)) and phase.add(n) < seconds:
            pass
        result.download_bytes, result.download_seconds = phase.total, phase.elapsed()


def _upload(tunnel: Tunnel, host: str, port: int, seconds: float, result: BenchResult,
            progress: Progress | None) -> None:
    chunk = bytes(256 * 1024)
    with tunnel.open_connection(host, port, timeout=15) as sock:
        sock.settimeout(15)
        phase = _Phase("upload", seconds, result, progress)
        while phase.elapsed() < seconds:
            sock.sendall(chunk)
            phase.add(len(chunk))
        sock.shutdown(socket.SHUT_WR)
        sock.recv(64)  # the sink answers once it has read everything: the upload is done when it says so
        result.upload_bytes, result.upload_seconds = phase.total, phase.elapsed()


def _echo(tunnel: Tunnel, host: str, port: int, count: int, result: BenchResult, progress: Progress | None) -> None:
    with tunnel.open_connection(host, port, timeout=15) as sock:
        sock.settimeout(15)
        for index in range(count):
            started = time.perf_counter()
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                break
            result.rtts_ms.append((time.perf_counter() - started) * 1000)
            if progress is not None and index % 50 == 0:
                progress("latency", index / count)
