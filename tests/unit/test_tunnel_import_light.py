"""Bringing a tunnel up waits for no DNS library: dnspython (tens of ms to import) loads on the first lookup
through the tunnel, or on the notebook's prefetch thread during the handshake, never at `import` of the runtime."""

from __future__ import annotations

import subprocess
import sys


def test_the_runtime_imports_no_dns_library() -> None:
    code = ("import sys, wgmagic.runtime.tunnel, wgmagic.runtime.engine; "
            "print(sorted(m for m in sys.modules if m == 'dns' or m.startswith(('dns.', 'wgmagic.netstack.dns'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
