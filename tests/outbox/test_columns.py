"""Column types (outbox.columns)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime
from sqlalchemy.dialects import sqlite

from outbox.columns import UtcDateTime

SQLITE = sqlite.dialect()


class TestUtcDateTimeOnSqlite:
    @pytest.mark.parametrize(
        "value",
        [
            datetime(2026, 12, 7, 6, 59, 38, 887783, tzinfo=UTC),
            datetime(2026, 12, 7, 6, 59, 38, tzinfo=UTC),  # no microseconds: still six digits
            datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=2))),
        ],
    )
    def test_it_stores_the_text_sqlalchemys_sqlite_datetime_stores(self, value: datetime) -> None:
        """The faster processor writes what SQLAlchemy's own would, for the same UTC instant:
        rows written through the engine and through the writers compare as text."""
        ours = UtcDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
        theirs = DateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
        assert ours is not None
        assert theirs is not None
        expected = theirs(value.astimezone(UTC).replace(tzinfo=None))
        assert ours(value) == expected
        assert ours(None) is None

    def test_a_naive_datetime_is_refused(self) -> None:
        process = UtcDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
        assert process is not None
        with pytest.raises(ValueError, match="naive datetime"):
            process(datetime(2026, 12, 7, 6, 59))
