"""Services that run on a tunnel's loop thread: local forwards, the SOCKS5 proxy, the gateway's exposes."""
