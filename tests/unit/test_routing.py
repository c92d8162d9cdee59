"""Tunnel.url / Tunnel.engine at the string level (wgmagic/runtime/services/routing.py): which forward each form
of connection string gets and what the driver is then given; the forwards' own libpq_params() decide the
host/hostaddr/port, as %%wgsql's connections use them. The servers behind are tested in
tests/integration/test_every_tool.py."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgmagic.connstr import DsnError, conninfo, parse_dsn
from wgmagic.proto.forwarding import NEUTRAL, ForwardProtocol
from wgmagic.runtime.services.forward import Forward, ForwardSpec
from wgmagic.runtime.services.routing import create_engine, route_url

SOCKET_DIR = "/tmp/wgmagic-abcdefgh"


class Tunnel:
    """Stands in for runtime.tunnel.Tunnel's forward bookkeeping: forward(), forwards, close_forward()."""

    def __init__(self) -> None:
        self.forwards: list = []
        self.made: list[tuple[str, object]] = []
        self.ports = iter(range(40001, 40100))
        self.protocols: list[str] = []

    def forward(self, target: str, local: object = None, protocol: ForwardProtocol = NEUTRAL) -> object:
        host, _, port = target.rpartition(":")
        spec = ForwardSpec(host.strip("[]"), int(port), None, "unix" if local is None else "tcp",  # type: ignore
                           protocol=protocol)
        self.protocols.append(protocol.name)
        if local is None:
            spec.socket_dir = SOCKET_DIR
            address = f"{SOCKET_DIR}/{protocol.socket_name(int(port))}"
        else:
            address = ("127.0.0.1", next(self.ports))
        forward = SimpleNamespace(spec=spec, address=address, local_address=address, closed=False)
        forward.libpq_params = lambda: Forward.libpq_params(forward)  # the real rule
        self.forwards.append(forward)
        self.made.append((target, local))
        return forward

    def close_forward(self, forward: object) -> None:
        self.forwards.remove(forward)

    def resolve_addresses(self, host: str) -> list:
        return []


def test_libpq_keywords_get_a_unix_socket_and_keep_the_rest():
    tunnel = Tunnel()
    routed = route_url(tunnel, "host=db.internal user=app dbname=app password='p w' sslmode=prefer")
    assert routed == f"host={SOCKET_DIR} port=5432 user=app password='p w' dbname=app sslmode=prefer"
    assert tunnel.made == [("db.internal:5432", None)]


def test_psycopg_sqlalchemy_url_gets_a_unix_socket_in_the_query():
    tunnel = Tunnel()
    routed = route_url(tunnel, "postgresql+psycopg://app:s3cr%40t@db.internal:6543/app?application_name=nb")
    parts = urlsplit(routed)
    assert parts.scheme == "postgresql+psycopg" and parts.hostname is None and parts.password == "s3cr%40t"
    assert parse_qs(parts.query) == {"application_name": ["nb"], "host": [SOCKET_DIR], "port": ["6543"]}
    assert tunnel.made == [("db.internal:6543", None)]


@pytest.mark.parametrize("url", [
    "postgresql://app:pw@db.internal/app",  # libpq, ADBC, ConnectorX all read it: TCP
    "postgres://app:pw@db.internal:5432/app",
    "postgresql+pg8000://app:pw@db.internal/app",
    "postgresql+asyncpg://app:pw@db.internal/app",
    "mysql+pymysql://app:pw@db.internal/app?charset=utf8mb4",
    "mysql+mysqldb://app:pw@db.internal:3306/app",
    "mariadb+pymysql://app:pw@db.internal/app",
    "clickhouse://u:pw@db.internal:9000/default",
])
def test_other_forms_get_loopback_tcp(url):
    tunnel = Tunnel()
    routed = urlsplit(route_url(tunnel, url))
    original = parse_dsn(url)
    assert (routed.hostname, routed.port) == ("127.0.0.1", 40001)
    assert routed.password == "pw" and routed.username == original.user
    assert routed.path == f"/{original.database}"
    assert tunnel.made == [(f"db.internal:{original.port}", 0)]
    assert dict(parse_qs(routed.query)) == {k: [v] for k, v in original.query}


def test_mysql_default_port_and_explicit_port():
    tunnel = Tunnel()
    route_url(tunnel, "mysql+pymysql://app@db.internal/app")
    route_url(tunnel, "mysql+pymysql://app@db.internal:3307/app")
    assert tunnel.made == [("db.internal:3306", 0), ("db.internal:3307", 0)]


def test_verify_full_keeps_the_real_name_for_libpq_forms():
    tunnel = Tunnel()
    routed = route_url(tunnel, "postgresql://app:pw@db.internal/app?sslmode=verify-full&sslrootcert=/ca.crt")
    parts = urlsplit(routed)
    assert (parts.hostname, parts.port) == ("db.internal", 40001)
    assert parse_qs(parts.query) == {"sslmode": ["verify-full"], "sslrootcert": ["/ca.crt"], "hostaddr": ["127.0.0.1"]}
    keywords = route_url(tunnel, "host=db.internal dbname=app sslmode=verify-full")
    assert keywords == "host=db.internal port=40001 dbname=app sslmode=verify-full hostaddr=127.0.0.1"
    # the same TCP forward serves both
    assert tunnel.made == [("db.internal:5432", 0)]


def test_require_tls_over_tcp_without_hostaddr_for_url_readers_that_lack_it():
    # sslmode=require does not check the name: plain loopback, which ConnectorX also reads.
    routed = urlsplit(route_url(Tunnel(), "postgresql://app@db.internal/app?sslmode=require"))
    assert routed.hostname == "127.0.0.1" and parse_qs(routed.query) == {"sslmode": ["require"]}


def test_a_given_hostaddr_is_the_target_and_never_left_for_libpq():
    tunnel = Tunnel()
    routed = route_url(tunnel, "host=db.internal hostaddr=198.18.0.1 dbname=app")
    assert routed == f"host={SOCKET_DIR} port=5432 dbname=app"
    routed = route_url(tunnel, "postgresql://app@db.internal/app?hostaddr=198.18.0.1&sslmode=verify-full")
    assert parse_qs(urlsplit(routed).query)["hostaddr"] == ["127.0.0.1"]
    assert tunnel.made == [("198.18.0.1:5432", None), ("198.18.0.1:5432", 0)]


def test_ipv6_literal_host():
    tunnel = Tunnel()
    route_url(tunnel, "mysql+pymysql://app@[fd00::1]:3306/app")
    assert tunnel.made == [("[fd00::1]:3306", 0)]


def test_local_overrides():
    tunnel = Tunnel()
    assert urlsplit(route_url(tunnel, "postgresql://app@db.internal/app", local="unix")).hostname is None
    assert "hostaddr=127.0.0.1" in route_url(tunnel, "host=db.internal dbname=app", local="tcp")
    with pytest.raises(ValueError, match="Unix socket"):
        route_url(tunnel, "mysql+pymysql://app@db.internal/app", local="unix")
    with pytest.raises(ValueError, match="local must be"):
        route_url(tunnel, "postgresql://app@db.internal/app", local="udp")


def test_forwards_are_reused_per_target_and_kind_and_remade_when_closed():
    tunnel = Tunnel()
    a = route_url(tunnel, "postgresql://app:pw@db.internal/app")
    b = route_url(tunnel, "postgresql+pg8000://other@DB.internal:5432/x")
    assert urlsplit(a).port == urlsplit(b).port and len(tunnel.made) == 1
    route_url(tunnel, "host=db.internal dbname=app")  # a Unix socket: a second forward
    assert len(tunnel.made) == 2
    tunnel.close_forward(tunnel.forwards[0])
    c = route_url(tunnel, "postgresql://app:pw@db.internal/app")
    assert len(tunnel.made) == 3 and urlsplit(c).port != urlsplit(a).port


@pytest.mark.parametrize("text", ["", "just words", "postgresql:///app?host=/var/run/postgresql",
                                  "host=/tmp dbname=app", "postgresql://app@/app"])
def test_no_network_host_is_refused(text):
    with pytest.raises(DsnError):
        route_url(Tunnel(), text)


def test_errors_never_quote_the_password():
    with pytest.raises(DsnError) as caught:
        route_url(Tunnel(), "postgresql://app:hunter2@/app")
    assert "hunter2" not in str(caught.value)


def test_engine_urls_at_the_string_level():
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("pymysql")
    tunnel = Tunnel()
    engine = create_engine(tunnel, "mysql+pymysql://app:pw@db.internal/app")
    assert (engine.url.host, engine.url.port, engine.url.password) == ("127.0.0.1", 40001, "pw")
    assert engine.pool._pre_ping and "pw" not in repr(engine)
    plain = create_engine(tunnel, "postgresql://app:pw@db.internal/app")  # no driver: psycopg 3
    assert plain.url.drivername == "postgresql+psycopg" and plain.url.query["host"] == SOCKET_DIR
    keywords = create_engine(tunnel, "host=db.internal user=app dbname=app", pool_pre_ping=False)
    assert keywords.url.drivername == "postgresql+psycopg" and not keywords.pool._pre_ping
    pg8000 = create_engine(tunnel, "postgresql+pg8000://app:pw@db.internal/app")
    assert pg8000.url.host == "db.internal"  # its connections get a socket through the tunnel instead


_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)


@given(st.dictionaries(st.sampled_from(["user", "password", "dbname", "options", "application_name"]), _values))
def test_conninfo_round_trips_through_the_parser(params):
    dsn = parse_dsn(conninfo({"host": "db.internal", **params}))
    assert dsn.host == "db.internal"
    assert dsn.user == params.get("user") and dsn.password == params.get("password")
    assert dsn.database == params.get("dbname")
    assert dict(dsn.query) == {k: v for k, v in params.items() if k in ("options", "application_name")}


@pytest.mark.parametrize(("text", "protocol"), [
    ("host=db.internal dbname=app", "postgresql"),
    ("postgresql://app@db.internal/app", "postgresql"),
    ("postgresql+psycopg://app@db.internal:6543/app", "postgresql"),
    ("postgresql+pg8000://app@db.internal:15432/app", "postgresql"),
    ("mysql+pymysql://app@db.internal/app", "neutral"),
    ("mysql+pymysql://app@db.internal:5432/app", "neutral"),  # a MySQL server on PostgreSQL's port: still MySQL
    ("mssql+pytds://app@db.internal:1433/app", "neutral"),
])
def test_the_forward_speaks_the_urls_protocol_never_the_ports(text, protocol):
    tunnel = Tunnel()
    route_url(tunnel, text)
    assert tunnel.protocols == [protocol]


def test_a_postgres_unix_forward_is_named_for_libpq():
    tunnel = Tunnel()
    route_url(tunnel, "host=db.internal port=7000 dbname=app")
    assert tunnel.forwards[0].address == f"{SOCKET_DIR}/.s.PGSQL.7000"
