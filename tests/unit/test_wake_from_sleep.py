"""Wake from sleep (issue 22): WireGuard's ages count suspended time, TCP's do not. A 10-minute suspend moves
the boot clock 600 s and the monotonic clock not at all; the first packet after it starts a handshake at once
instead of leaving on keys the peer threw away (REJECT_AFTER_TIME is 180 s)."""

from __future__ import annotations

import ipaddress

from tests.unit.test_wireguard_device import Pair, ipv4
from wgmagic.runtime.suspend import SuspendAwareDevice, SuspendClock
from wgmagic.wireguard import crypto
from wgmagic.wireguard.timers import Timers

INITIATION, TRANSPORT = 1, 4
SUSPEND = 600.0


def kinds(datagrams: list[tuple[bytes, tuple[str, int]]]) -> list[int]:
    return [data[0] for data, _addr in datagrams]


def test_the_core_given_boot_time_initiates_at_once_after_a_suspend() -> None:
    pair = Pair()
    assert pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), pair.now)
    pair.exchange()
    assert pair.b.packets_received() == [ipv4("10.9.0.1", "10.0.0.5")]
    assert pair.a_peer.handshakes == 1
    boot = pair.now + SUSPEND  # the device's clock is the boot clock: it moved 600 s while the machine slept
    pair.a.send_packet(ipv4("10.9.0.1", "10.0.0.5", b"after"), boot)
    assert kinds(pair.a.datagrams_to_send()) == [INITIATION]  # not a transport packet on stale keys


def test_a_suspend_aware_device_on_the_monotonic_clock_initiates_at_once_after_a_suspend() -> None:
    """The engine's side: its clock (monotonic) stands still over the suspend; the device's counts it."""
    clocks = {"boot": 1000.0, "mono": 50.0}
    sleep = SuspendClock(boot=lambda: clocks["boot"], monotonic=lambda: clocks["mono"])
    pair = Pair()
    a = SuspendAwareDevice(pair.a_key, timers=Timers(), suspended=sleep.suspended)
    a.add_peer(crypto.public_key(pair.b_key), endpoint=("127.0.0.1", 2222),
               allowed_ips=[ipaddress.ip_network("10.0.0.0/24")])
    pair.a = a
    now = clocks["mono"]
    pair.now = now
    assert a.send_packet(ipv4("10.9.0.1", "10.0.0.5"), now)
    pair.exchange()
    assert pair.b.packets_received() == [ipv4("10.9.0.1", "10.0.0.5")]
    assert a.send_packet(ipv4("10.9.0.1", "10.0.0.5", b"fresh"), now + 1)
    assert kinds(a.datagrams_to_send()) == [TRANSPORT]
    deadline_before = a.next_timer()
    clocks["boot"] += SUSPEND  # a 10-minute suspend: boot time moves, monotonic time does not
    assert sleep.suspended() == SUSPEND
    assert deadline_before is not None and a.next_timer() == deadline_before - SUSPEND  # due already
    a.send_packet(ipv4("10.9.0.1", "10.0.0.5", b"after"), now + 1)
    assert kinds(a.datagrams_to_send()) == [INITIATION]


def test_suspend_clock_counts_only_whole_suspends_and_never_shrinks() -> None:
    clocks = {"boot": 10.0, "mono": 5.0}
    sleep = SuspendClock(boot=lambda: clocks["boot"], monotonic=lambda: clocks["mono"])
    clocks["boot"] += 3
    clocks["mono"] += 3  # awake: both move
    assert sleep.suspended() == 0.0
    clocks["boot"] += 60  # asleep
    assert sleep.suspended() == 60.0
    clocks["boot"] += 0.0001  # the clocks' reading jitter is not a suspend: the value stays put
    assert sleep.suspended() == 60.0
    clocks["mono"] += 100  # a monotonic clock ahead of boot (never on Linux): it never shrinks
    assert sleep.suspended() == 60.0
