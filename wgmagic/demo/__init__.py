"""`wgmagic demo`: a local PostgreSQL behind a local rootless gateway, and the quickstart notebook."""
