"""Customer.io's documented Track API limits, as one value validation is given.

Every number is a byte or item count from Customer.io's Track API reference ("payload
size limits" and the v2 operation descriptions). Byte limits count UTF-8 bytes, not
characters. Ingest builds its own `Limits` so that ``max_op_bytes`` follows the
``CIOQ_MAX_OP_BYTES`` setting; everything else keeps Customer.io's numbers;
``strict`` follows the workspace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """The size and count limits an operation must keep to be accepted by Customer.io."""

    #: A person id, email, cio_id or anonymous_id; an object id; a delivery id.
    max_id_bytes: int = 150
    max_attr_name_bytes: int = 150
    #: One attribute value: strings by their own bytes, other values as JSON.
    max_attr_value_bytes: int = 1000
    #: Attributes in one identify call, object or relationship.
    max_attributes: int = 300
    max_event_name_bytes: int = 100
    #: An event's ``attributes`` (v1 ``data``), serialized as JSON.
    max_event_data_bytes: int = 100_000
    #: One serialized v2 operation; "32kb" is taken as 32 KiB, as RudderStack does.
    max_op_bytes: int = 32_768
    #: ``ids`` in one manual-segment add or remove call.
    max_segment_ids: int = 1000
    #: All attributes of one object or relationship together: names plus values.
    max_object_attrs_bytes: int = 100_000
    #: cioq's opt-in checks beyond Customer.io's (the workspace's ``strict_validation``;
    #: docs/validation-rules.md): unknown fields refused rather than dropped, event ids
    #: held to ULIDs, and the other rules Customer.io states no refusal for.
    strict: bool = False


DEFAULT_LIMITS = Limits()
