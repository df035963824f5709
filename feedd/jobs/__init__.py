"""Backfill jobs: any range of history fetched in the background, persisted, resumable."""
