"""WireGuard over WebSocket (through `wgmagic relay`) against plain UDP, in the same run, on the same bed.

Each figure comes from the same client program (tests/testbed/wsclient.py, its own process) run once with
`--via udp` and once with `--via ws://...`: TCP download and upload through the tunnel, `SELECT 1` latency
through a forward with psycopg, and the inner TCP's retransmissions with 1% loss on the outer path (for UDP:
the bed's impairment relay dropping 1% of datagrams each way; for the WebSocket: nft in the client's
namespace dropping 1% of the outer TCP's segments each way, which the kernel's TCP retransmits).
Needs root. Usage: python -m benchmarks.websocket [--mib 64] [--selects 300] [--loss-mib 16]
    [--parts down,up,select1,loss]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from tests.testbed import wsbed
from tests.testbed.bed import REPO, TestBed


def run_client(bed: TestBed, *args: str, namespace: wsbed.BlockedNamespace | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("WGMAGIC_VIA")}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-m", "tests.testbed.wsclient", *args]
    if namespace is not None:
        result = namespace.run(*command, env=env, cwd=REPO, check=False, timeout=900)
    else:
        import subprocess

        result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"client failed: {result.stdout[-1500:]} {result.stderr[-3000:]}")
    report = json.loads(lines[-1])
    if not report.get("ok"):
        raise RuntimeError(f"client failed: {report}")
    return report


def peer_retransmits(bed: TestBed) -> int:
    """The peer namespace's kernel TCP RetransSegs (the inner TCP's sender when downloading)."""
    lines = [line.split() for line in bed.run_in_peer("cat", "/proc/net/snmp").stdout.splitlines()
             if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("RetransSegs")])


def measured(bed: TestBed, mode: str, config: str, via: str, arg: str, *extra: str, namespace=None,
             relay: wsbed.RelayProcess | None = None) -> dict:
    """One client run, with what the server side saw meanwhile: `server_udp_drops`, datagrams the kernel
    dropped at wireguard-go's UDP socket (its receive buffer full); the CPU seconds of wireguard-go and of
    the relay (the client's own come in its report); for downloads `retransmits` as the peer's kernel TCP
    counted them (the inner sender then)."""
    pids = {"wireguard_go": bed.peer_process.pid if bed.peer_process else 0,
            "relay": relay.process.pid if relay and relay.process else 0}
    cpu = {name: wsbed.cpu_seconds(pid) for name, pid in pids.items() if pid}
    drops, retransmits = wsbed.udp_socket_drops(bed.port), peer_retransmits(bed)
    report = run_client(bed, mode, config, via, arg, *extra, namespace=namespace)
    report["server_udp_drops"] = wsbed.udp_socket_drops(bed.port) - drops
    for name, before in cpu.items():
        report[f"{name}_cpu_seconds"] = wsbed.cpu_seconds(pids[name]) - before
    if mode == "download":
        report["retransmits"] = peer_retransmits(bed) - retransmits
    return report


def lossy_runs(bed: TestBed, config: str, via: str, size: int, namespace=None, relay=None) -> dict:
    """Download (inner sender: the peer's kernel TCP) and upload (inner sender: wgmagic's stack)."""
    return {"down": measured(bed, "download", config, via, str(size), namespace=namespace, relay=relay),
            "up": measured(bed, "upload", config, via, str(size), namespace=namespace, relay=relay)}


PARTS = ("down", "up", "select1", "loss")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--selects", type=int, default=300)
    parser.add_argument("--loss-mib", type=int, default=16)
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"what to measure, comma-separated among {','.join(PARTS)} (default: all)")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown --parts {','.join(sorted(unknown))}")
    size = args.mib << 20
    bed = TestBed().up()
    results: dict[str, dict] = {"udp": {}, "websocket": {}}
    relays: dict[str, dict] = {}
    try:
        config = bed.dir / "bench.conf"
        config.write_text(bed.client_config())
        relay = wsbed.relay_process(bed.dir, "127.0.0.1", bed.port)
        paths = {"udp": "udp", "websocket": relay.url}
        for name, via in paths.items():
            used = relay if name == "websocket" else None
            if "down" in parts:
                results[name]["down"] = measured(bed, "download", str(config), via, str(size), relay=used)
            if "up" in parts:
                results[name]["up"] = measured(bed, "upload", str(config), via, str(size), relay=used)
            if "select1" in parts:
                results[name]["select1"] = run_client(bed, "latency", str(config), via, str(args.selects), bed.dsn())
        relays["plain"] = relay.stop()
        if "loss" in parts:  # 1% loss on the outer path
            loss_size = args.loss_mib << 20
            with bed.relay(loss=0.01) as impaired:
                lossy = bed.dir / "lossy.conf"
                lossy.write_text(bed.client_config(impaired.endpoint))
                results["udp"]["loss"] = lossy_runs(bed, str(lossy), "udp", loss_size)
            namespace = bed.blocked_namespace()
            relay = wsbed.relay_process(bed.dir, namespace.host_ip, bed.port)
            namespace.outer_loss(1.0, port=relay.port)
            outer = bed.dir / "outer.conf"
            outer.write_text(bed.client_config(f"{namespace.host_ip}:{bed.port}"))
            results["websocket"]["loss"] = lossy_runs(bed, str(outer), relay.url, loss_size, namespace=namespace,
                                                     relay=relay)
            namespace.outer_loss(0)
            relays["loss"] = relay.stop()
    finally:
        bed.down()

    udp, ws = results["udp"], results["websocket"]
    print(f"{'':32} {'UDP':>10} {'WebSocket':>10} {'ratio':>7}")
    for key, label in (("down", "download MB/s"), ("up", "upload MB/s")):
        if key in parts:
            a, b = udp[key]["mb_s"], ws[key]["mb_s"]
            print(f"{label:32} {a:10.1f} {b:10.1f} {b / a:7.2f}x")
            print(f"{'  inner retransmits':32} {udp[key]['retransmits']:10d} {ws[key]['retransmits']:10d}")
            if key == "up":
                for episode in ("rto", "recoveries", "spurious_recoveries"):
                    print(f"{'    ' + episode:32} {udp[key]['tcp_episodes'][episode]:10d} "
                          f"{ws[key]['tcp_episodes'][episode]:10d}")
            print(f"{'  drops at wireguard-go socket':32} {udp[key]['server_udp_drops']:10d} "
                  f"{ws[key]['server_udp_drops']:10d}")
            for who in ("cpu_seconds", "relay_cpu_seconds", "wireguard_go_cpu_seconds"):
                label = "  CPU s " + who.replace("_cpu_seconds", "").replace("cpu_seconds", "client")
                print(f"{label:32} {udp[key].get(who, 0.0):10.2f} {ws[key].get(who, 0.0):10.2f}")
    if "select1" in parts:
        for stat in ("median_ms", "p99_ms"):
            a, b = udp["select1"][stat], ws["select1"][stat]
            print(f"{'SELECT 1 ' + stat.replace('_ms', '') + ' ms':32} {a:10.3f} {b:10.3f} {b / a:7.2f}x")
    if "loss" in parts:
        for key, who in (("down", "peer's kernel TCP"), ("up", "wgmagic's TCP")):
            a, b = udp["loss"][key], ws["loss"][key]
            print(f"{'inner retransmits, 1% loss, ' + key:32} {a['retransmits']:10d} {b['retransmits']:10d}"
                  f"   ({args.loss_mib} MiB; sender: {who})")
            print(f"{'  MB/s, 1% loss, ' + key:32} {a['mb_s']:10.1f} {b['mb_s']:10.1f}")
            print(f"{'  drops at wireguard-go socket':32} {a['server_udp_drops']:10d} {b['server_udp_drops']:10d}")
        print("outer loss: UDP path: the bed's impairment relay drops 1% of datagrams each way; WebSocket path: "
              "nft drops 1% of the outer TCP's segments each way (the kernel retransmits them)")
    print(f"relay counters: {json.dumps(relays)}")
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
