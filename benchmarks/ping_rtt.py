"""ICMP echo RTT through wgmagic against the kernel's ping through a wireguard-go client, same peer, same run.

Needs root (it brings up the test bed). Usage: python -m benchmarks.ping_rtt [--count N]
"""

from __future__ import annotations

import argparse
import re
import statistics

from tests.testbed.bed import PEER4, TestBed
from wgmagic.runtime.tunnel import connect


def summary(rtts_ms: list[float]) -> str:
    ordered = sorted(rtts_ms)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50:.3f} ms, avg {statistics.fmean(ordered):.3f} ms, p99 {p99:.3f} ms (n={len(ordered)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    bed = TestBed().up()
    try:
        out = bed.run_in_reference("ping", "-c", str(args.count), "-i", "0.01", "-W", "1", PEER4).stdout
        reference = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
        with connect(bed.client_config()) as tunnel:
            tunnel.ping(PEER4, 20, interval=0.01)  # warm-up
            replies = tunnel.ping(PEER4, args.count, interval=0.01, timeout=1.0)
        ours = [r.rtt * 1000 for r in replies if r.rtt is not None]
        print(f"reference (kernel ping via wireguard-go client): {summary(reference)}")
        print(f"wgmagic (Tunnel.ping, user-space stack):          {summary(ours)}")
        print(f"p50 ratio wgmagic/reference: {statistics.median(ours) / statistics.median(reference):.2f}, "
              f"difference {statistics.median(ours) - statistics.median(reference):+.3f} ms")
    finally:
        bed.down()


if __name__ == "__main__":
    main()
