"""House rule 1: the policy core imports no I/O, event loop, metrics or clock modules."""

from __future__ import annotations

import ast
from pathlib import Path

import controlplane.policy

FORBIDDEN = {"asyncio", "aiohttp", "redis", "prometheus_client", "time", "datetime", "socket",
             "random", "httpx", "requests", "threading", "subprocess", "os"}  # fmt: skip
FORBIDDEN_CALLS = {"open", "print"}


def _modules() -> list[Path]:
    root = Path(controlplane.policy.__file__).parent
    return sorted(root.rglob("*.py"))


def test_policy_core_is_pure() -> None:
    bad: list[str] = []
    files = _modules()
    assert len(files) > 10
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in FORBIDDEN or n.startswith("controlplane.gateway"):
                    bad.append(f"{path.name}: import {n}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in FORBIDDEN_CALLS
            ):
                bad.append(f"{path.name}:{node.lineno}: call {node.func.id}()")
    assert not bad, bad
