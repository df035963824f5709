"""Storage of candles: the store interface and its SQLite and PostgreSQL backends.

Deliberately empty of imports: the export worker process imports modules of this package,
and must never load Python's sqlite3 next to ADBC's own SQLite library (two SQLite
libraries in one process break each other's locks), nor trio.
"""
