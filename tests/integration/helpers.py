"""What the integration modules share: polling (the bed's `poll` and `wait_for`) and `magic_shell`, an IPython
shell with wgmagic loaded and, if asked, one of the bed's client identities connected as a named tunnel."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from IPython.core.interactiveshell import InteractiveShell

from tests.testbed.bed import poll, wait_for

__all__ = ["magic_shell", "poll", "wait_for"]


@contextlib.contextmanager
def magic_shell(testbed: Any, identity: int = 0, *, name: str | None = None,
                **user_ns: Any) -> Iterator[InteractiveShell]:
    """The process's InteractiveShell with `user_ns` set and wgmagic loaded; with `name`, the bed's client
    config for `identity` (in the namespace as `{name}_config`) connected by `%wg connect ... --name NAME`
    (asserted to succeed). On exit wgmagic is unloaded, which closes its tunnels and SQL connections, also when
    the body failed. Two tunnels up at once need two identities (one key, one tunnel)."""
    shell = InteractiveShell.instance()
    shell.user_ns.update(user_ns)
    shell.run_line_magic("load_ext", "wgmagic")
    try:
        if name is not None:
            shell.user_ns[f"{name}_config"] = testbed.client_config(identity=identity)
            result = shell.run_cell(f"%wg connect {{{name}_config}} --name {name}")
            assert result.success, result.error_in_exec
        yield shell
    finally:
        shell.run_line_magic("unload_ext", "wgmagic")
