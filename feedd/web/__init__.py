"""The HTTP/WebSocket face of feedd: a Quart-Trio app served by hypercorn in the root nursery."""
