"""The export worker's pipes: requests go in as one JSON line each, answers come out as frames
(export id, kind, length, bytes). Shared by feedd and the worker; needs neither trio nor Arrow.
"""

from __future__ import annotations

import struct
from typing import Any

import attrs
import orjson

from feedd.store.exportrequest import ExportRequest

#: export id, kind, payload length (little-endian: 4 + 1 + 4 bytes)
HEADER = struct.Struct("<IcI")
#: the next bytes of the file (maybe none)
DATA = b"D"
#: the file is complete: nothing more will come for this id
END = b"E"
#: the export failed; the payload says why (UTF-8): nothing more will come for this id
FAIL = b"X"

#: ops: open (start an export and answer its first bytes), next, close (forget it, no answer)
OPEN, NEXT, CLOSE = "open", "next", "close"


@attrs.frozen
class Order:
    op: str
    id: int
    #: the database file (open only)
    path: str | None = None
    request: ExportRequest | None = None


def encode_order(order: Order) -> bytes:
    doc: dict[str, Any] = {"op": order.op, "id": order.id}
    if order.path is not None:
        doc["path"] = order.path
    if order.request is not None:
        doc["request"] = attrs.asdict(order.request)
    return orjson.dumps(doc) + b"\n"


def decode_order(line: bytes) -> Order:
    doc = orjson.loads(line)
    request = doc.get("request")
    return Order(
        doc["op"],
        int(doc["id"]),
        doc.get("path"),
        None if request is None else ExportRequest(**request),
    )


def header(ident: int, kind: bytes, size: int) -> bytes:
    return HEADER.pack(ident, kind, size)
