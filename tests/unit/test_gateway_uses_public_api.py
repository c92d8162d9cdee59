"""Issue 12: the gateway runs on a tunnel's loop through Tunnel's public API only (call_on_loop, engine)."""

from __future__ import annotations

import ast
from pathlib import Path

import wgmagic.runtime.services.gateway


def test_gateway_touches_no_private_attribute_of_another_object():
    tree = ast.parse(Path(wgmagic.runtime.services.gateway.__file__).read_text())
    private = [f"line {node.lineno}: {ast.unparse(node)}" for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
               and not (isinstance(node.value, ast.Name) and node.value.id == "self")]
    assert private == []
