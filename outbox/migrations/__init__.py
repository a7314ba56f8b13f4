"""Alembic migrations of Ballast's own tables (``ballast_*``); see `outbox.schema`."""
