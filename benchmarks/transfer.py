"""TCP through wgmagic's user-space stack against kernel TCP through a wireguard-go client, same run.

Both sides run the same Python loops (recv_into a 256 KiB buffer; sendall of 1 MiB pieces; 1-byte echo
round trips) against the test bed's services behind the same wireguard-go peer. Needs root.
Usage: python -m benchmarks.transfer [--mib 96] [--echo 2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

from benchmarks.common import rss_mib
from tests.testbed.bed import PEER4, REPO, TestBed
from wgmagic.runtime.tunnel import connect

CLIENT_LOOPS = r'''
import json, socket, struct, sys, time
def download(make, size):
    sock = make(9000); sock.sendall(struct.pack("!Q", size)); buf = bytearray(256 * 1024); got = 0
    start = time.perf_counter()
    while got < size:
        n = sock.recv_into(buf)
        if not n: raise SystemExit("short download")
        got += n
    elapsed = time.perf_counter() - start; sock.close(); return size / elapsed / 1e6
def upload(make, size):
    sock = make(9002); chunk = bytes(1 << 20); sent = 0; start = time.perf_counter()
    while sent < size:
        sock.sendall(chunk); sent += len(chunk)
    sock.shutdown(socket.SHUT_WR); sock.recv(64); elapsed = time.perf_counter() - start; sock.close()
    return size / elapsed / 1e6
def echo(make, count):
    sock = make(9001); times = []
    for _ in range(count):
        t = time.perf_counter(); sock.sendall(b"x")
        if sock.recv(1) != b"x": raise SystemExit("echo")
        times.append((time.perf_counter() - t) * 1000)
    sock.close(); times.sort(); return times[len(times) // 2], times[int(len(times) * 0.99)]
'''


def reference(mib: int, echoes: int, bed: TestBed) -> dict:
    script = CLIENT_LOOPS + f'''
def resent():  # the kernel's TCP segments retransmitted in this network namespace (RFC 4022 tcpRetransSegs)
    lines = [line.split() for line in open("/proc/net/snmp") if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("RetransSegs")])
make = lambda port: socket.create_connection(("{PEER4}", port))
size = {mib} << 20
r0 = resent(); down = download(make, size); r1 = resent(); up = upload(make, size); r2 = resent()
print(json.dumps({{"down": down, "up": up, "echo": echo(make, {echoes}), "resent": (r1 - r0, r2 - r1)}}))
'''
    out = bed.run_in_reference(sys.executable, "-c", script, timeout=600).stdout
    return json.loads(out)


def ours(mib: int, echoes: int, bed: TestBed) -> dict:
    namespace: dict = {}
    exec(CLIENT_LOOPS, namespace)  # the very same loops as the reference
    with connect(bed.client_config()) as tunnel:
        make = lambda port: tunnel.open_connection(PEER4, port, timeout=30)  # noqa: E731
        size = mib << 20
        before = resource.getrusage(resource.RUSAGE_SELF)
        resent = [_retransmits(tunnel)]
        down = namespace["download"](make, size)
        resent.append(_retransmits(tunnel))
        up = namespace["upload"](make, size)
        after = resource.getrusage(resource.RUSAGE_SELF)
        resent.append(_retransmits(tunnel))
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        echo = namespace["echo"](make, echoes)
        from wgmagic.tools.bench import run_bench

        bench = run_bench(tunnel, PEER4, 9000)  # what %wg bench reports, with its default 5 s per direction
        rss_before = rss_mib()
        sockets = [tunnel.open_connection(PEER4, 9001, timeout=30) for _ in range(200)]
        for sock in sockets:
            sock.sendall(b"x")
            sock.recv(1)
        rss_200 = rss_mib()
        for sock in sockets:
            sock.close()
    return {"down": down, "up": up, "echo": echo, "bench": (bench.download_mb_s, bench.upload_mb_s),
            "resent": (resent[1] - resent[0], resent[2] - resent[1]),
            "cpu_per_gib": cpu / (2 * mib / 1024),
            "rss_before_200": rss_before, "rss_with_200": rss_200}


def _retransmits(tunnel: object) -> int:
    """Segments wgmagic's TCP resent so far, closed connections included."""
    return int(tunnel.stats()["tcp"]["retransmits"])  # type: ignore[attr-defined,index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=96)
    parser.add_argument("--echo", type=int, default=2000)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    bed = TestBed().up()
    try:
        ref = reference(args.mib, args.echo, bed)
        mine = ours(args.mib, args.echo, bed)
    finally:
        bed.down()
    print(f"download {args.mib} MiB: wgmagic {mine['down']:.1f} MB/s, reference {ref['down']:.1f} MB/s, "
          f"ratio {mine['down'] / ref['down']:.2f}")
    print(f"upload   {args.mib} MiB: wgmagic {mine['up']:.1f} MB/s, reference {ref['up']:.1f} MB/s, "
          f"ratio {mine['up'] / ref['up']:.2f}")
    segments = (args.mib << 20) // 1368  # full-sized segments per direction (MTU 1420, timestamps)
    print(f"segments resent: wgmagic down {mine['resent'][0]} up {mine['resent'][1]}, reference down "
          f"{ref['resent'][0]} up {ref['resent'][1]} (of about {segments} each way)")
    print(f"echo RTT p50/p99: wgmagic {mine['echo'][0]:.3f}/{mine['echo'][1]:.3f} ms, reference "
          f"{ref['echo'][0]:.3f}/{ref['echo'][1]:.3f} ms, p50 difference {mine['echo'][0] - ref['echo'][0]:+.3f} ms")
    bench_down, bench_up = mine["bench"]
    print(f"%wg bench: down {bench_down:.1f} MB/s ({bench_down / mine['down']:.2f} of the download above), "
          f"up {bench_up:.1f} MB/s ({bench_up / mine['up']:.2f} of the upload above)")
    print(f"wgmagic CPU: {mine['cpu_per_gib']:.1f} s per GiB moved (this process, all threads)")
    print(f"wgmagic RSS: {mine['rss_before_200']:.0f} MiB before, {mine['rss_with_200']:.0f} MiB with 200 open "
          f"connections")


if __name__ == "__main__":
    main()
