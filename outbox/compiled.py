"""SQLAlchemy statements compiled once for a driver that is called directly.

Group commit's writers call their drivers (asyncpg, sqlite3) without SQLAlchemy's
execution layers; SQLAlchemy still writes the SQL, and the columns' own types still
convert the values (JSON, `outbox.columns.UtcDateTime`, binary), so what is stored is
what SQLAlchemy would have stored.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.schema import ColumnDefault

Arguments = Callable[[dict[str, Any]], tuple[Any, ...]]
"""Turns a row's values (by column or parameter name) into a statement's positional
arguments."""


def positional(compiled: SQLCompiler, dialect: Dialect) -> tuple[str, Arguments]:
    """The SQL of ``compiled`` and its `Arguments`, each value converted as its column's type
    converts it for ``dialect``. Values bound in the statement itself, and columns' scalar
    or argument-free defaults, fill what a row does not give."""
    return str(compiled), _arguments(compiled, dialect)


def _arguments(compiled: SQLCompiler, dialect: Dialect) -> Arguments:
    names: list[str] = list(compiled.positiontup or [])
    binds = compiled.binds
    convert = [binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names]
    fixed = {name: binds[name].value for name in names}
    defaults = {
        column.key: column.default.arg
        for column in compiled.insert_prefetch
        if isinstance(column.default, ColumnDefault)
    }

    def arguments(values: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, to_db in zip(names, convert, strict=True):
            if name in values:
                value = values[name]
            elif name in defaults:
                value = defaults[name]
                value = value(None) if callable(value) else value
            else:
                value = fixed[name]
            out.append(to_db(value) if to_db is not None else value)
        return tuple(out)

    return arguments


@functools.cache
def insert_of(table: Table, columns: tuple[str, ...], dialect: Dialect) -> tuple[str, Arguments]:
    """The insert of these columns of ``table`` (no RETURNING), compiled once per dialect."""
    statement = insert(table).inline()
    return positional(statement.compile(dialect=dialect, column_keys=list(columns)), dialect)


@functools.cache
def insert_columns_of(
    table: Table, columns: tuple[str, ...], dialect: Dialect
) -> tuple[list[str], Arguments]:
    """The columns an insert of these ``columns`` of ``table`` writes (given ones and those
    with a default), in the order of its `Arguments`; for a statement built otherwise."""
    compiled = insert(table).inline().compile(dialect=dialect, column_keys=list(columns))
    return list(compiled.positiontup or []), _arguments(compiled, dialect)


@functools.cache
def compiled_for(statement: Any, dialect: Dialect) -> tuple[str, Arguments]:
    """``statement`` (built once, by its caller) compiled once per dialect."""
    return positional(statement.compile(dialect=dialect), dialect)
