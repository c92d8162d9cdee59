"""SQL over the tunnel: statements and parameters, connection strings, connections, results, messages."""
