"""`%wg ping`, `%wg resolve`, `%wg doctor` and `%wg bench`: looking at the path through the tunnel."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from wgmagic.notebook.cmd.tunnels import find_tunnel
from wgmagic.notebook.variables import config_text, value

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic


def ping(magic: WgMagic, args: argparse.Namespace) -> None:
    """`%wg ping HOST [-c N]`: ICMP echo through the tunnel, printed as ping prints it."""
    if args.count < 1:
        raise UsageError("%wg ping: -c/--count must be 1 or more")
    tunnel = find_tunnel(magic, args.tunnel)
    address = str(tunnel.resolve_address(value(magic.shell.user_ns, args.host) or ""))
    answered = []
    for reply in tunnel.ping_iter(address, args.count):
        if reply.rtt is None:
            print(f"no answer from {address}: icmp_seq={reply.seq}")
        else:
            answered.append(reply.rtt * 1000)
            print(f"{reply.size + 8} bytes from {address}: icmp_seq={reply.seq} time={reply.rtt * 1000:.2f} ms")
    loss = 100 * (args.count - len(answered)) / max(1, args.count)
    summary = f"{args.count} sent, {len(answered)} received, {loss:.0f}% loss"
    if answered:
        average = sum(answered) / len(answered)
        summary += f", rtt min/avg/max {min(answered):.2f}/{average:.2f}/{max(answered):.2f} ms"
    print(summary)


def resolve(magic: WgMagic, args: argparse.Namespace) -> list[str]:
    """`%wg resolve NAME`: the addresses the tunnel's DNS gives, as text."""
    addresses = [str(a) for a in find_tunnel(magic, args.tunnel).resolve(value(magic.shell.user_ns, args.name) or "")]
    print(f"{args.name}: {', '.join(addresses)}")
    return addresses


def doctor(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg doctor [CONFIG] [TARGET] [--target HOST:PORT]` (the CLI's `wgmagic doctor CONFIG TARGET` too): the
    doctor's report, of a config or the current tunnel; a lone HOST:PORT that names no file is the target."""
    from wgmagic.tools.doctor import run_doctor

    config, target = args.config, args.target
    if args.target_arg is not None:
        if target is not None:
            raise UsageError("%wg doctor: give the target once (CONFIG TARGET, or --target TARGET)")
        target = args.target_arg
    if config and target is None and _is_host_port(config) and not os.path.exists(config):
        config, target = None, config  # `%wg doctor db.internal:5432`: the current tunnel, to that target
    if config:
        text, _ = config_text(magic.shell.user_ns, config)
        return run_doctor(text, target=value(magic.shell.user_ns, target), timeout=args.timeout)
    return run_doctor(None, target=value(magic.shell.user_ns, target), tunnel=find_tunnel(magic, None),
                      timeout=args.timeout)


def _is_host_port(text: str) -> bool:
    from wgmagic.addresses import split_host_port

    if text.startswith(("{", "$")):
        return False
    try:
        split_host_port(text)
    except ValueError:
        return False
    return True


def bench(magic: WgMagic, args: argparse.Namespace) -> Any:
    """`%wg bench HOST:PORT [--seconds S]`: throughput both ways and latency, shown as a table and a figure."""
    from IPython.display import display

    from wgmagic.addresses import split_host_port
    from wgmagic.notebook.plots import PngFigure, bench_figure, png
    from wgmagic.notebook.progress import PhaseBar
    from wgmagic.notebook.status import Table
    from wgmagic.tools.bench import run_bench

    try:
        host, port = split_host_port(value(magic.shell.user_ns, args.target) or "")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    tunnel = find_tunnel(magic, args.tunnel)
    address = str(tunnel.resolve_address(host))
    bar = PhaseBar()
    try:
        result = run_bench(tunnel, address, port, seconds=args.seconds, progress=bar.update)
    finally:
        bar.close()
    table = Table()
    table.rows, table.title = result.rows(), f"wgmagic bench through {tunnel.name} to {args.target}"
    display(table)
    display(PngFigure(png(bench_figure(result)), "bench"))
    return result
