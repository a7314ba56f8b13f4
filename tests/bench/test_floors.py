"""The benchmark's memory floor imports what a service on that database loads from
outside Ballast: nothing it does not load, or the floor would say the libraries weigh
more than they do."""

from __future__ import annotations

from sqlalchemy import make_url

from bench.floors import DRIVERS, LIBRARIES
from tests.helpers import modules_a_service_loads


def test_the_memory_floor_imports_only_what_a_service_loads(database_url: str) -> None:
    database = "SQLite" if make_url(database_url).get_backend_name() == "sqlite" else "PostgreSQL"
    loaded = modules_a_service_loads(database_url)
    assert not {*LIBRARIES, *DRIVERS[database]} - loaded
    assert not {m for m in loaded if m.startswith("opentelemetry.sdk")}, "tracing is off"
