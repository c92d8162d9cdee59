"""The user-space IP stack, sans-I/O: `stack.Stack` (IPv4/IPv6, ICMP, UDP), `tcp/` (RFC 9293), `wire/`
(header parsing and building), `dns` (stub-resolver pieces), `events` (what it tells its caller)."""
