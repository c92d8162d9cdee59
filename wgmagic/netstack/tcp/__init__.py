"""TCP (RFC 9293), sans-I/O: `connection.TcpConnection` composes `rtt`, `reassembly`, `recovery`, `timers` and
`congestion`; `config.TcpConfig` holds its knobs, `state.TcpState` its states, `listener.TcpListener` the
passive open."""
