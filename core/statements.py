"""Hot reads the ORM builds and compiles once per process and shape, then runs with each request's values.

On a simple API read Django spends most of its Python time in the ORM rather than in the database:
building the queryset (every ``filter``/``values``/``annotate`` clones and resolves the query) and
compiling it to SQL, on every request, to the same SQL with other values. Measured on the job list
(``GET /api/jobs/``, 50 rows): building 0.46 ms and compiling 0.28 ms against 1.3 ms for the database to
answer, of 5.4 ms of CPU per request in all.

A ``Statement`` builds its queryset once per *shape* (which optional filters are present: a different
shape is different SQL) with a ``Slot`` wherever a request's value goes, keeps the SQL Django's compiler
wrote, and then only runs it: the values prepared by each slot's field as the ORM prepares a lookup's
value, the ORM's converters applied to the columns that have some (SQLite's times and booleans), rows as
dicts keyed by the ``values()`` names. Queries still go through Django's cursor (its error wrapping,
``CaptureQueriesContext`` and debug logging see them); on PostgreSQL with their values bound by the server,
so that they run prepared (``_cursor``). The slice is the one part the ORM writes into the
SQL as literals (``LIMIT 50 OFFSET 100``), so a statement pages with placeholders of its own instead
(``PageOf``).

Use it for a read that runs on most requests (the job list, the API token's lookup), built from the same
selectors every other read uses, never to assemble SQL by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import NamedTuple

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import BigIntegerField, Expression, QuerySet, Subquery


class Slot(Expression):
    """Where ``Statement.rows(values={name: ...})`` puts a value: one placeholder in the SQL. Use it as a
    lookup's value (``jobs.filter(owner_id=Slot("owner", Job._meta.get_field("owner")))``); the value is
    prepared by ``output_field`` at each run."""

    def __init__(self, name: str, output_field):
        super().__init__(output_field=output_field)
        self.name = name

    def as_sql(self, compiler, connection):
        return "%s", [self]

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"


class PageOf(Subquery):
    """One page of an ordered ``values()`` queryset, as a subquery: ``filter(id__in=PageOf(ids))``, its
    ``LIMIT`` and ``OFFSET`` the statement's ``limit`` and ``offset`` values (placeholders, where a sliced
    queryset writes its numbers into the SQL).

    What a page-first query is for: the rows of the page are picked from the narrow subquery (an index
    scan and a sort of ids and sort keys), and only the kept ones are joined and have their columns
    computed and sent by the outer query; a query sorted and limited as a whole joins and carries every
    matching row through the sort."""

    template = "(%(subquery)s LIMIT %%s OFFSET %%s)"

    def __init__(self, queryset: QuerySet, **extra):
        if not queryset.ordered:
            raise ValueError("PageOf pages an ordered queryset: give it an order_by().")
        super().__init__(queryset, **extra)

    def as_sql(self, compiler, connection, template=None, **extra_context):
        sql, params = super().as_sql(compiler, connection, template, **extra_context)
        return sql, (*params, Slot("limit", BigIntegerField()), Slot("offset", BigIntegerField()))


class Table(NamedTuple):
    """Rows as tuples, with the ``values()`` names of their columns."""

    names: tuple[str, ...]
    rows: list[tuple]


@dataclass(frozen=True)
class Compiled:
    sql: str
    params: tuple  # constants as the compiler wrote them, and the Slots to fill
    names: tuple[str, ...]  # the values() names of the columns, in order
    converters: tuple  # (column index, converter functions, expression) for columns that need them


class Statement:
    """``build(**shape)`` → a ``values()`` queryset with Slots for the values, ordered if it is paged.
    Compiled once per process, database alias and shape."""

    def __init__(self, build: Callable[..., QuerySet]):
        self.build = build
        self._compiled: dict[tuple, Compiled] = {}

    def compiled(self, shape: dict[str, Hashable], using: str = DEFAULT_DB_ALIAS) -> Compiled:
        key = (using, *sorted(shape.items()))
        compiled = self._compiled.get(key)
        if compiled is None:
            # Two threads may both compile a new shape: the same result, and the dict keeps one.
            compiled = self._compiled[key] = self._compile(self.build(**shape), using)
        return compiled

    @staticmethod
    def _compile(queryset: QuerySet, using: str) -> Compiled:
        query = queryset.query
        if query.is_sliced:
            raise ValueError("Page a statement with PageOf, not by slicing its queryset.")
        compiler = query.get_compiler(using)
        sql, params = compiler.as_sql()
        if not query.values_select and not query.annotation_select:
            raise ValueError("A statement's queryset names its columns with values().")
        # As ValuesIterable (django/db/models/query.py) names a row's values.
        if query.selected:
            names = tuple(query.selected)
        else:
            names = (*query.extra_select, *query.values_select, *query.annotation_select)
        columns = [expression for expression, _sql, _alias in compiler.select]
        converters = tuple(
            (index, functions, expression)
            for index, (functions, expression) in compiler.get_converters(columns).items()
        )
        return Compiled(sql, tuple(params), names, converters)

    def rows(
        self,
        *,
        shape: dict[str, Hashable] | None = None,
        values: dict[str, object] | None = None,
        using: str = DEFAULT_DB_ALIAS,
    ) -> list[dict]:
        """The rows for ``values`` (one per Slot name), as dicts keyed by the ``values()`` names."""
        names, rows = self.table(shape=shape, values=values, using=using)
        return [dict(zip(names, row, strict=True)) for row in rows]

    def table(
        self,
        *,
        shape: dict[str, Hashable] | None = None,
        values: dict[str, object] | None = None,
        using: str = DEFAULT_DB_ALIAS,
    ) -> Table:
        """The rows for ``values`` as tuples, for a caller that reads them by position (no dict a row)."""
        compiled = self.compiled(shape or {}, using)
        connection = connections[using]
        values = values or {}
        params = [
            part.output_field.get_db_prep_value(values[part.name], connection)
            if isinstance(part, Slot)
            else part
            for part in compiled.params
        ]
        with _cursor(connection) as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        if compiled.converters:
            rows = [self._convert(row, compiled.converters, connection) for row in rows]
        return Table(compiled.names, rows)

    @staticmethod
    def _convert(row: tuple, converters: tuple, connection) -> tuple:
        """As SQLCompiler.apply_converters (django/db/models/sql/compiler.py) does for one row."""
        row = list(row)
        for index, functions, expression in converters:
            value = row[index]
            for function in functions:
                value = function(value, expression, connection)
            row[index] = value
        return tuple(row)


def _cursor(connection):
    """Django's cursor, on PostgreSQL over a psycopg cursor that binds values on the server, so that psycopg
    prepares the statement once it has run ``prepare_threshold`` times on a connection (the setting
    DATABASE_PREPARED_STATEMENTS, talkforge/settings/env.py) and PostgreSQL plans it once per connection
    instead of on every run. Django's own cursor binds on the client (the values written into the SQL's
    text), which psycopg never prepares (psycopg/client_cursor.py ``ClientCursorMixin._get_prepared``).
    Measured on the job list's page (bench/api_load.py's data, PostgreSQL's CPU over 1,000 runs): 1.6-1.8
    ms a page bound on the client, 0.96-0.97 ms prepared. Still Django's cursor wrapper around it: the
    same error wrapping, debug logging and CaptureQueriesContext as ``connection.cursor()``: Django makes the
    cursor as always, from the psycopg connection's ``cursor_factory`` (django/db/backends/postgresql/base.py
    ``create_cursor``), set to Django's server-binding cursor class for this one cursor. The connection is
    this thread's own, so no other code sees the swap."""
    if connection.vendor != "postgresql":
        return connection.cursor()
    from django.db.backends.postgresql.base import ServerBindingCursor

    connection.close_if_health_check_failed()
    connection.ensure_connection()
    psycopg_connection = connection.connection
    client_binding = psycopg_connection.cursor_factory
    psycopg_connection.cursor_factory = ServerBindingCursor
    try:
        return connection.cursor()
    finally:
        psycopg_connection.cursor_factory = client_binding
