"""Batch bodies: serialized ops (Track v2 or Pipelines calls) in ``{"batch":[...]}``.

Sizes are measured on the exact bytes that are sent, envelope included; ops are never
re-serialized. Which ops go into a body, in which order, is `across_shards.pack_heads`'.
"""

from __future__ import annotations

from collections.abc import Sequence

BATCH_HEAD = b'{"batch":['
BATCH_TAIL = b"]}"
#: Bytes of an empty batch body: ``{"batch":[]}``.
ENVELOPE_BYTES = len(BATCH_HEAD) + len(BATCH_TAIL)


def batch_body(ops: Sequence[bytes]) -> bytes:
    """The request body that carries `ops`, byte for byte."""
    return BATCH_HEAD + b",".join(ops) + BATCH_TAIL


def batch_size_bytes(op_sizes: Sequence[int]) -> int:
    """The size of the body that would carry ops of these sizes."""
    return ENVELOPE_BYTES + sum(op_sizes) + max(len(op_sizes) - 1, 0)
