"""Wire formats, parse and build only: IPv4/IPv6 headers (`ip`), ICMP (`icmp`), TCP headers and options
(`tcp`), the Internet checksum (`checksum`)."""
