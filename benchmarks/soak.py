"""A day in an hour (issue 22): a notebook-like workload against the test bed, watched over time.

A real Jupyter kernel (jupyter_client's KernelManager) runs `%load_ext wgmagic`, `%wg connect`s the bed's client
config and runs `%%wgsql` cells every few seconds, small and big:
  SELECT 1                 the answer must be 1
  an aggregate             count and sum of `measurements` (100 rows, known answer) and the even ids of `big`
  a slice of `big`         100,000 rows into a DataFrame; its row count and column sums (id, x, flag, label
                           lengths, the latest `at`) are checked against the same figures computed by the server
                           itself, straight in the peer's namespace (psql over its Unix socket, no tunnel)
Any mismatch is a *wrong result*; a cell that fails (an error, a time-out) is counted apart as a *failed* query.

Meanwhile: a kernel restart every few minutes (restart_kernel, then connect again), the peer (wireguard-go)
killed and restarted once, WireGuard's own rekeys (REKEY_AFTER_TIME is 120 s and the workload sends every few
seconds, so the tunnel rekeys every two minutes without any shortened timer; `%wg connect` takes no timers and
WGMAGIC_TIMERS is read by the command line only), and a WebSocket drop: the second half of the run goes through a
`wgmagic relay` (`%wg connect ... --via ws://...`), killed and restarted once on the same port.

Sampled every ~10 s: the kernel process's RSS (VmRSS of /proc/PID/status, MiB), open file descriptors
(/proc/PID/fd), threads (/proc/PID/task), the server's sessions from the tunnel's client address
(`pg_stat_activity` rows), the handshakes the peer has seen from that key, and the running counts of queries,
failed queries and wrong results. Printed as a table over time, then one summary line: start and end of each
column and a verdict per column, "bounded" or "grows": after the first warm-up minute, the samples are cut in
thirds, and a column grows when the median of the last third is above every sample of the middle third (a
comparison within the run, no absolute threshold).

Needs root (it brings up the test bed, tests/testbed/bed.py, and tears it down).
Usage: python -m benchmarks.soak [--minutes 30] [--quick] [--json PATH]
  --quick   a one-minute run (unless --minutes says otherwise) with a smaller `big`, faster sampling and every
            event squeezed in: the smoke test's shape (tests/integration/test_soak_smoke.py)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import random
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.testbed.bed import CLIENT4, CLIENT6, REPO, TestBed, clean_leftovers, write_private

SLICE = 100_000  # rows of `big` per big query
COLUMNS = ("rss_mib", "fds", "threads", "sessions")  # the columns judged bounded or growing


@dataclass
class Sample:
    t: float  # seconds since the workload began
    kernel: int  # which kernel (0, 1, ... : one more per restart)
    rss_mib: float
    fds: int
    threads: int
    sessions: int  # pg_stat_activity rows from the tunnel's client address
    handshakes: int  # handshakes the peer has seen from the client key so far (latest-handshake changes)
    queries: int
    failed: int
    wrong: int


@dataclass
class Counts:
    queries: int = 0
    failed: int = 0
    wrong: int = 0
    failures: list[str] = field(default_factory=list)  # the first few, for the report
    wrongs: list[str] = field(default_factory=list)


# ---- the kernel --------------------------------------------------------------------------------------------

class Kernel:
    """A real Jupyter kernel (python3, this interpreter) and a blocking client on it."""

    def __init__(self, cwd: Path) -> None:
        from jupyter_client.manager import KernelManager

        self.manager = KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env={**os.environ, "PYTHONPATH": str(REPO)})
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)
        self.pid = self._pid()

    def _pid(self) -> int:
        ok, out, _ = self.run("import os; print(os.getpid())")
        if not ok:
            raise RuntimeError("the kernel does not answer")
        return int(out.strip())

    def run(self, code: str, timeout: float = 120) -> tuple[bool, str, str]:
        """Execute one cell: (succeeded, its stdout, its error text: the traceback's last line or stderr)."""
        stdout: list[str] = []
        stderr: list[str] = []

        def hook(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                (stdout if content["name"] == "stdout" else stderr).append(content["text"])
            elif message["msg_type"] == "error":
                stderr.append(f"{content['ename']}: {content['evalue']}")

        try:
            reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook, allow_stdin=False)
        except TimeoutError:
            # the cell still runs: interrupt it so that the next one can start
            with contextlib.suppress(Exception):
                self.manager.interrupt_kernel()
            with contextlib.suppress(Exception):
                self._drain(30)
            return False, "".join(stdout), f"timed out after {timeout:.0f} s"
        ok = reply["content"]["status"] == "ok"
        return ok, "".join(stdout), "".join(stderr).strip()

    def _drain(self, timeout: float) -> None:
        """Read iopub until the kernel is idle again (after an interrupted cell)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.client.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return

    def restart(self) -> None:
        """restart_kernel (a shutdown request first, as Jupyter's restart button does), then ready again."""
        self.manager.restart_kernel(now=False)
        self.client.wait_for_ready(timeout=60)
        self.pid = self._pid()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop_channels()
        with contextlib.suppress(Exception):
            self.manager.shutdown_kernel(now=False)


def proc_figures(pid: int) -> tuple[float, int, int]:
    """(VmRSS in MiB, open fds, threads) of a process now; zeros once it is gone."""
    try:
        rss = 0.0
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) / 1024
        return rss, len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0.0, 0, 0


def server_sessions(bed: TestBed) -> int:
    """Rows of pg_stat_activity whose client address is the tunnel's (either family), -1 if psql failed."""
    try:
        out = bed.psql_admin("SELECT count(*) FROM pg_stat_activity "
                             f"WHERE client_addr IN ('{CLIENT4}', '{CLIENT6}')")
        return int(out.strip())
    except Exception:
        return -1


def peer_handshake_stamp(bed: TestBed) -> int:
    """The peer's latest-handshake time (Unix seconds) for client identity 0, 0 if none or unreadable."""
    try:
        age = bed.peer_latest_handshake_age(0)
    except Exception:
        return 0
    return 0 if age == float("inf") else round(time.time() - age)


# ---- the workload ------------------------------------------------------------------------------------------

class Soak:
    def __init__(self, bed: TestBed, args: argparse.Namespace) -> None:
        self.bed = bed
        self.args = args
        self.duration = args.minutes * 60.0
        self.counts = Counts()
        self.samples: list[Sample] = []
        self.events: list[tuple[float, str]] = []
        self.kernel: Kernel | None = None
        self.generation = 0
        self.start = time.monotonic()
        self.stop = threading.Event()
        self.handshakes = 0
        self._last_stamp = 0
        self.relay: Any = None
        self.via: str | None = None
        self.rows = args.rows
        self.config_path = write_private(bed.dir / "soak-wg0.conf", bed.client_config())
        self.random = random.Random(args.seed)
        self.query_number = 0
        self.leftover_after_restart: list[int] = []

    def now(self) -> float:
        return time.monotonic() - self.start

    def event(self, text: str) -> None:
        self.events.append((round(self.now(), 1), text))
        print(f"  [{self.now():7.1f} s] {text}", flush=True)

    # -- the sampler (its own thread) --
    def sample(self) -> None:
        stamp = peer_handshake_stamp(self.bed)
        if stamp and stamp != self._last_stamp:
            self.handshakes += 1
            self._last_stamp = stamp
        kernel = self.kernel
        rss, fds, threads = proc_figures(kernel.pid) if kernel else (0.0, 0, 0)
        self.samples.append(Sample(round(self.now(), 1), self.generation, round(rss, 1), fds, threads,
                                   server_sessions(self.bed), self.handshakes, self.counts.queries,
                                   self.counts.failed, self.counts.wrong))

    def sampler(self) -> None:
        while not self.stop.wait(self.args.sample_every):
            with contextlib.suppress(Exception):
                self.sample()

    # -- cells --
    def cell(self, code: str, timeout: float = 120) -> tuple[bool, str, str]:
        assert self.kernel is not None
        return self.kernel.run(code, timeout)

    def connect(self) -> None:
        """%load_ext wgmagic, the DSN into a variable (never printed), %wg connect (over the relay if any)."""
        via = f" --via {self.via}" if self.via else ""
        steps = ["%load_ext wgmagic", f"dsn = {self.bed.dsn()!r}",
                 f"%wg connect {self.config_path} --name soak{via}"]
        for code in steps:
            ok, _, error = self.cell(code, timeout=90)
            if not ok:
                self.fail(f"connect: {code.split()[0]} failed: {error[-300:]}")
                return

    def fail(self, text: str) -> None:
        self.counts.failed += 1
        if len(self.counts.failures) < 20:
            self.counts.failures.append(f"{self.now():.0f} s: {text}")
        print(f"  [{self.now():7.1f} s] FAILED {text}", flush=True)

    def wrong(self, text: str) -> None:
        self.counts.wrong += 1
        if len(self.counts.wrongs) < 20:
            self.counts.wrongs.append(f"{self.now():.0f} s: {text}")
        print(f"  [{self.now():7.1f} s] WRONG {text}", flush=True)

    def query(self, sql: str, check: str, expected: Any, what: str) -> None:
        """One %%wgsql cell into a fresh variable, then a cell that prints json of `check` (an expression of the
        frame `f`); compared with `expected`."""
        self.query_number += 1
        name = f"r{self.query_number}"
        self.counts.queries += 1
        ok, _, error = self.cell(f"%%wgsql {{dsn}} --alias soak -o {name} --limit 1\n{sql}", timeout=120)
        if not ok or error.startswith("timed out"):
            self.fail(f"{what}: {error[-300:] or 'the cell failed'}")
            return
        # IPython's output cache (Out, _, __) keeps every displayed frame: flushed here, so that RSS measures
        # the tunnel and the magic rather than a notebook's history (run with --keep-outputs to see that too)
        flush = "" if self.args.keep_outputs else "\nget_ipython().displayhook.flush()"
        ok, out, error = self.cell(f"import json\nf = {name}\nprint(json.dumps({check}))\ndel {name}, f{flush}")
        if not ok:
            self.fail(f"{what}: no frame ({error[-300:]})")
            return
        got = json.loads(out.strip().splitlines()[-1])
        if got != expected:
            self.wrong(f"{what}: got {got}, the server says {expected}")

    def select_one(self) -> None:
        self.query("SELECT 1 AS one", "int(f['one'].iloc[0])", 1, "SELECT 1")

    def aggregate(self) -> None:
        if self.random.random() < 0.5:
            self.query("SELECT count(*) AS n, sum(value) AS s FROM measurements",
                       "[int(f['n'].iloc[0]), float(f['s'].iloc[0])]", [100, 7575.0], "aggregate measurements")
        else:
            self.query("SELECT count(*) AS n FROM big WHERE flag", "int(f['n'].iloc[0])", self.rows // 2,
                       "aggregate big")

    def big_slice(self) -> None:
        low = self.random.randrange(1, max(2, self.rows - SLICE + 2))
        where = f"id >= {low} AND id < {low + SLICE}"
        truth = self.bed.psql_admin(
            "SELECT count(*), sum(id), sum(x), count(*) FILTER (WHERE flag), sum(length(label)), "
            f"extract(epoch FROM max(at))::bigint FROM big WHERE {where}", database="app").strip().split("|")
        expected = [int(truth[0]), int(truth[1]), float(truth[2]), int(truth[3]), int(truth[4]), int(truth[5])]
        check = ("[len(f), int(f['id'].sum()), float(f['x'].sum()), int(f['flag'].sum()), "
                 "int(f['label'].str.len().sum()), int(f['at'].max().timestamp())]")
        self.query(f"SELECT * FROM big WHERE {where}", check, expected, f"slice of big at {low}")

    # -- events --
    def restart_kernel(self) -> None:
        assert self.kernel is not None
        before = server_sessions(self.bed)
        self.kernel.restart()
        self.generation += 1
        # what the server still holds from the old kernel, a few seconds after it is gone (issue 22: nothing)
        time.sleep(3)
        left = server_sessions(self.bed)
        self.event(f"kernel restarted (now pid {self.kernel.pid}); sessions from the tunnel's address: "
                   f"{before} before, {left} three seconds after")
        self.leftover_after_restart.append(left)
        self.connect()

    def restart_peer(self) -> None:
        self.bed.kill_peer()
        self.bed.restart_peer()
        self.event("peer (wireguard-go) killed and restarted")

    def start_relay(self) -> None:
        from tests.testbed import wsbed

        self.relay = wsbed.relay_process(self.bed.dir, "127.0.0.1", self.bed.port)
        self.via = self.relay.url
        self.event(f"relay up at {self.relay.url}: the next kernels go through the WebSocket")

    def drop_websocket(self) -> None:
        self.relay.kill()
        time.sleep(1)
        # RelayProcess.restart() rewrites every argument that starts with "HOST:", which for a relay on 127.0.0.1
        # also turns `--to 127.0.0.1:PEER` into the relay's own port: give the same port explicitly instead.
        self.relay.args = [f"127.0.0.1:{self.relay.port}" if arg == "127.0.0.1:0" else arg
                           for arg in self.relay.args]
        self.relay.start()
        self.event("relay killed and restarted on the same port: the WebSocket dropped")

    # -- the run --
    def run(self) -> None:
        args = self.args
        restart_every = args.restart_every
        peer_at = 0.3 * self.duration
        relay_at = 0.5 * self.duration
        drop_at = 0.7 * self.duration  # between two kernel restarts
        next_restart = restart_every
        done_peer = done_relay = done_drop = False
        self.kernel = Kernel(self.bed.dir)
        self.event(f"kernel up (pid {self.kernel.pid})")
        self.connect()
        self.sample()
        sampler = threading.Thread(target=self.sampler, name="soak-sampler", daemon=True)
        sampler.start()
        cycle = 0
        try:
            while self.now() < self.duration:
                began = self.now()
                if not done_peer and began >= peer_at:
                    done_peer = True
                    self.restart_peer()
                if not done_relay and began >= relay_at:
                    done_relay = True
                    self.start_relay()
                    self.restart_kernel()  # the relay phase begins with a fresh kernel
                    next_restart = began + restart_every
                elif began >= next_restart:
                    next_restart = began + restart_every
                    self.restart_kernel()
                if done_relay and not done_drop and began >= drop_at:
                    done_drop = True
                    self.drop_websocket()
                kind = cycle % 3
                if kind == 0:
                    self.select_one()
                elif kind == 1:
                    self.aggregate()
                else:
                    self.big_slice()
                cycle += 1
                pause = args.every - (self.now() - began)
                if pause > 0:
                    time.sleep(pause)
        finally:
            self.stop.set()
            sampler.join(30)
            with contextlib.suppress(Exception):
                self.sample()
            if self.kernel:
                self.kernel.close()
            if self.relay:
                with contextlib.suppress(Exception):
                    self.relay.stop()


# ---- the verdicts and the table ----------------------------------------------------------------------------

def verdict(values: list[float]) -> str:
    """"grows" when the median of the last third is above every value of the middle third (a step up that
    stays, or a trend; one spike in the middle makes it harder, not easier), else "bounded"; "n/a" with fewer
    than three values."""
    if len(values) < 3:
        return "n/a"
    third = len(values) // 3
    middle, last = values[third:2 * third], values[len(values) - third:]
    return "grows" if statistics.median(last) > max(middle) else "bounded"


def summarize(samples: list[Sample], counts: Counts, warmup: float) -> dict[str, Any]:
    judged = [s for s in samples if s.t >= warmup and s.rss_mib > 0] or samples
    out: dict[str, Any] = {}
    for column in COLUMNS:
        values = [getattr(s, column) for s in samples if getattr(s, column) >= 0 and s.rss_mib > 0]
        judged_values = [getattr(s, column) for s in judged if getattr(s, column) >= 0]
        out[column] = {"start": values[0] if values else None, "end": values[-1] if values else None,
                       "max": max(values) if values else None, "verdict": verdict(judged_values)}
    out["wrong"] = counts.wrong
    out["failed"] = counts.failed
    out["queries"] = counts.queries
    out["handshakes"] = samples[-1].handshakes if samples else 0
    return out


def print_table(samples: list[Sample]) -> None:
    header = ["t (s)", "kernel", "RSS MiB", "fds", "threads", "sessions", "handshakes", "queries", "failed",
              "wrong"]
    print("  ".join(f"{h:>10}" for h in header))
    for s in samples:
        cells = [f"{s.t:.0f}", s.kernel, f"{s.rss_mib:.1f}", s.fds, s.threads, s.sessions, s.handshakes,
                 s.queries, s.failed, s.wrong]
        print("  ".join(f"{c:>10}" for c in cells))


def summary_line(summary: dict[str, Any]) -> str:
    parts = []
    for column in COLUMNS:
        figure = summary[column]
        parts.append(f"{column} {figure['start']} -> {figure['end']} (max {figure['max']}, {figure['verdict']})")
    return (f"SOAK SUMMARY: {'; '.join(parts)}; wrong results: {summary['wrong']}; failed queries: "
            f"{summary['failed']} of {summary['queries']}; handshakes seen by the peer: {summary['handshakes']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=None, help="length of the run (default 30; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="a one-minute smoke run with everything squeezed in")
    parser.add_argument("--json", help="write the samples, events and summary here as JSON")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--keep-outputs", action="store_true",
                        help="leave IPython's output cache (Out) alone: every displayed frame stays in memory")
    args = parser.parse_args(argv)
    if args.minutes is None:
        args.minutes = 1.0 if args.quick else 30.0
    duration = args.minutes * 60
    args.rows = 200_000 if args.quick else 1_000_000
    args.every = 2.0 if args.quick else 4.0  # seconds between queries
    args.sample_every = 5.0 if args.quick else 10.0
    # a kernel restart every few minutes: every 5 minutes, and at least three in a run
    args.restart_every = min(300.0, max(15.0, duration / 4))
    warmup = min(60.0, duration / 6)
    if os.geteuid() != 0:
        raise SystemExit("the soak brings up the test bed: run it as root")
    sys.path.insert(0, str(REPO))
    clean_leftovers()
    bed = TestBed().up()
    print(f"soak: {args.minutes:g} minutes; bed {bed.id}; a query every {args.every:g} s, samples every "
          f"{args.sample_every:g} s, a kernel restart every {args.restart_every:.0f} s", flush=True)
    soak: Soak | None = None
    try:
        bed.ensure_big_table(args.rows)
        soak = Soak(bed, args)
        soak.run()
    finally:
        bed.down()
    summary = summarize(soak.samples, soak.counts, warmup)
    print()
    print_table(soak.samples)
    print()
    if soak.counts.failures:
        print("failed queries (first few):")
        for line in soak.counts.failures:
            print("  " + line)
    if soak.counts.wrongs:
        print("wrong results (first few):")
        for line in soak.counts.wrongs:
            print("  " + line)
    print(f"sessions left three seconds after each kernel restart: {soak.leftover_after_restart}")
    print(summary_line(summary), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "minutes": args.minutes, "quick": args.quick, "warmup_seconds": warmup,
            "samples": [asdict(s) for s in soak.samples], "events": soak.events, "summary": summary,
            "failures": soak.counts.failures, "wrongs": soak.counts.wrongs,
            "sessions_left_after_restart": soak.leftover_after_restart}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
