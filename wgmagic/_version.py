"""The package's version, in one place below every layer: `wgmagic.__version__`, `wgmagic --version`, the
WebSocket transport's User-Agent, and pyproject's dynamic version (`[tool.setuptools.dynamic]`) all read it."""

__version__ = "0.1.0"
