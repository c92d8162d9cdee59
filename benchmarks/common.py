"""What the benchmarks share: readings of this process."""

from __future__ import annotations


def rss_mib() -> float:
    """This process's resident set size now, in MiB (VmRSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
