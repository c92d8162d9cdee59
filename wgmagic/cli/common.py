"""What the command line's commands share: the spec parsers of -L/-R/-D/--listen, the listener-error wording,
signal handling, the live status line and the test-only WGMAGIC_TIMERS."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

from wgmagic.errors import WgMagicError


def timers_from_environment() -> object | None:
    """WGMAGIC_TIMERS="rekey_after_time=3,rekey_timeout=1": a test-only way to shrink the protocol's constants."""
    text = os.environ.get("WGMAGIC_TIMERS", "").strip()
    if not text:
        return None
    from wgmagic.wireguard.timers import Timers

    names = {f.name for f in dataclasses.fields(Timers)}
    values: dict[str, float] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in names:
            raise WgMagicError(f"WGMAGIC_TIMERS: unknown timer {key!r}; known: {', '.join(sorted(names))}")
        try:
            values[key] = float(value)
        except ValueError:
            raise WgMagicError(f"WGMAGIC_TIMERS: {key} must be a number of seconds")
    return Timers(**values)


def client_config(path: str) -> object:
    """The parsed wg-quick file of a client command; ConfigError (one line, exit 2) when it cannot work."""
    from wgmagic.config import load_config
    from wgmagic.errors import ConfigError

    config = load_config(path)
    if not config.peers:
        raise ConfigError("has no [Peer] section: there is nothing to connect to", source=config.source)
    return config


def parse_local_spec(spec: str) -> tuple[str, int, str]:
    """ssh -L syntax: [bind:]port:host:hostport (IPv6 in brackets) -> (bind, port, "host:hostport")."""
    from wgmagic.addresses import AddressError, format_host, split_forward_spec

    try:
        bind, port, host, host_port = split_forward_spec(spec)
    except AddressError as exc:
        raise WgMagicError(f"-L {spec}: {exc.reason}") from None
    return bind or "127.0.0.1", port, f"{format_host(host)}:{host_port}"


def parse_remote_spec(spec: str) -> str:
    """ssh -R syntax, [tunnel_address:]port:host:hostport, or [ADDR:]PORT=HOST:PORT -> the latter."""
    from wgmagic.addresses import AddressError, format_host, split_forward_spec

    if "=" in spec:
        return spec
    try:
        bind, port, host, host_port = split_forward_spec(spec)
    except AddressError as exc:
        raise WgMagicError(f"-R {spec}: {exc.reason}") from None
    listen = f"{format_host(bind)}:{port}" if bind else str(port)
    return f"{listen}={format_host(host)}:{host_port}"


def parse_listen(text: str, option: str) -> tuple[str, int]:
    """[ADDR:]PORT (IPv6 in brackets; ADDR defaults to 127.0.0.1; port 0: the kernel chooses) -> (addr, port)."""
    from wgmagic.addresses import AddressError, split_host_port

    try:
        return split_host_port(text, default_host="127.0.0.1", low=0)
    except AddressError as exc:
        raise WgMagicError(f"{option} {text}: expected [ADDR:]PORT ({exc.reason})") from None


def parse_dynamic_spec(spec: str) -> tuple[str, int]:
    if spec.startswith("unix"):
        raise WgMagicError(f"-D {spec}: a Unix socket is -D unix or -D unix:DIR")
    return parse_listen(spec, "-D")


@contextlib.contextmanager
def listener_named(option: str, spec: str) -> Iterator[None]:
    """An OSError while starting the listener of `option spec` (-L, -D, -R, --listen, --websocket, --expose)
    becomes one sentence that names that option and the listener's address (the error's own text)."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WgMagicError(f"{option} {spec}: {reason}") from None


def stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C or SIGTERM: long-running commands end cleanly instead of dying mid-write."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    return stopping


def show_status_until(stopping: threading.Event, status_line: Callable[[], str], quiet: bool) -> None:
    """A live one-line status on a terminal (once a second) until `stopping` is set."""
    live = not quiet and sys.stdout.isatty()
    while not stopping.wait(1.0):
        if live:
            print("\r" + status_line(), end="", flush=True)
    if live:
        print()
