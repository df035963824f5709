"""The chaos suite (issue #6): feedd against faults it must survive without losing a candle."""
