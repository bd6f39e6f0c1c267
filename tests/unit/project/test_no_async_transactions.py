"""No coroutine of cioq builds a Redis transaction pipeline.

On a Redis Cluster that is redis-py's asyncio cluster transaction, which queues each
command with ``asyncio.run`` in a thread of its own and can leave node connections of that
throwaway event loop in the api's client (tests/e2e/store/test_cluster_transactions.py).
Atomic multi-command writes of the api are one script call instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_no_async_code_builds_a_transaction_pipeline() -> None:
    """A coroutine of service/ or workers/ calling ``pipeline(transaction=True)``: on a
    cluster that is redis-py's asyncio cluster transaction, with the trouble above."""
    found = []
    for path in sorted([*ROOT.glob("service/**/*.py"), *ROOT.glob("workers/**/*.py")]):
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "pipeline"
                    and any(
                        k.arg == "transaction"
                        and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                        for k in node.keywords
                    )
                ):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
