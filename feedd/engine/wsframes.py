"""Where each WebSocket frame of a server's byte stream starts and ends (RFC 6455 §5.2).

The websockets connector takes the common frame (a whole text or binary message in one
unmasked frame, no extension bits) straight from the bytes and hands every other frame to
websockets' protocol, whole and in order. websockets parses a frame in a generator, a few
microseconds each; this is a handful of byte reads.
"""

from __future__ import annotations

#: FIN set, no RSV bits, opcode text (1) or binary (2): a whole message in one frame
WHOLE_TEXT = 0x81
WHOLE_BINARY = 0x82
WHOLE_MESSAGE = frozenset((WHOLE_TEXT, WHOLE_BINARY))
#: the MASK bit of the second byte; a server must never set it (websockets refuses it)
MASKED = 0x80

Buffer = bytes | bytearray


def frame_bounds(buf: Buffer, pos: int) -> tuple[int, int] | None:
    """(payload start, frame end) of the frame whose header starts at ``pos``, or None while
    the header is not all in ``buf``. The frame is complete when its end is within ``buf``. A
    masked frame's key counts as header: such frames go to websockets, which refuses them."""
    avail = len(buf) - pos
    if avail < 2:
        return None
    second = buf[pos + 1]
    length = second & 0x7F
    start = pos + 2
    if length == 126:
        if avail < 4:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        start = pos + 4
    elif length == 127:
        if avail < 10:
            return None
        length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
        start = pos + 10
    if second & MASKED:
        start += 4
    return start, start + length
