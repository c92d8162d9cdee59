"""Tools on top of a tunnel: the plain-words doctor and the throughput bench."""
