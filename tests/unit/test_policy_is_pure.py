"""The policy core is pure: no I/O layer (state, gateway, controller, replay, workers) is
imported anywhere under controlplane/policy, so its rules cannot reach for a store."""

from __future__ import annotations

import ast
from pathlib import Path

POLICY = Path(__file__).resolve().parents[2] / "controlplane" / "policy"
FORBIDDEN = (
    "controlplane.state",
    "controlplane.gateway",
    "controlplane.controller",
    "controlplane.replay",
    "controlplane.api",
    "workers",
    "redis",
    "aiohttp",
    "fastapi",
)


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.append(node.module)
    return out


def test_policy_imports_no_io_layer() -> None:
    files = sorted(POLICY.rglob("*.py"))
    assert len(files) > 30
    bad = [
        f"{f.relative_to(POLICY)}: {m}"
        for f in files
        for m in _imports(f)
        if any(m == x or m.startswith(x + ".") for x in FORBIDDEN)
    ]
    assert bad == []
