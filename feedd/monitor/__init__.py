"""Observing the running service: log ring buffer, event-loop CPU accounting, system samples."""
