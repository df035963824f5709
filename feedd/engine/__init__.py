"""The exchange-agnostic ingest engine: connections, shards, backfill and their supervision."""
