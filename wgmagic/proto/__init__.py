"""Sans-I/O pieces of the application protocols the services speak: SOCKS5 negotiation (`socks5`) and the
PostgreSQL wire messages a forward writes itself (`postgres`). No socket, no clock, no thread."""
