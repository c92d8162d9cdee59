"""`%wg capture`: the tunnel's packets into a pcapng file, in the background, bounded; `--stop` writes it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from wgmagic.notebook.cmd.tunnels import find_tunnel
from wgmagic.notebook.variables import value

if TYPE_CHECKING:
    from wgmagic.notebook.magics import WgMagic


def capture(magic: WgMagic, args: argparse.Namespace) -> Any:
    """Start a capture (the Capture object), or with --stop stop the newest one and say where it went."""
    tunnel = find_tunnel(magic, args.tunnel)
    if args.stop:
        if not tunnel.captures:
            raise UsageError("no capture was started on this tunnel")
        running = tunnel.captures[-1]  # running, or stopped by itself (its time or a bound)
        path = running.stop()
        print(f"wgmagic: {running.written} packets written to {path} (stopped by {running.stopped_by})")
        return running
    try:
        started = tunnel.capture(value(magic.shell.user_ns, args.file), seconds=args.seconds,
                                 max_packets=args.max_packets, max_bytes=args.max_bytes, payload=args.payload,
                                 outer=args.outer)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(str(exc)) from None
    until = f"for {args.seconds:g} s" if args.seconds else "until %wg capture --stop"
    print(f"wgmagic: capturing to {started.path} {until} (at most {args.max_packets} packets, "
          f"{args.max_bytes} bytes; {'with' if args.payload else 'no'} payload)")
    return started
