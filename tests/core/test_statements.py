"""A Statement answers as the ORM's own queryset would, but builds and compiles it once per shape."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from core.statements import PageOf, Slot, Statement
from jobs.models import Job

OWNER = Slot("owner", Job._meta.get_field("owner"))


def jobs_query(*, with_status: bool):
    jobs = Job.objects.filter(owner_id=OWNER)
    if with_status:
        jobs = jobs.filter(status=Slot("status", Job._meta.get_field("status")))
    return jobs.values("id", "status", "params", owner_name=F("owner__username")).order_by("-id")


@pytest.fixture
def jobs(db, alice, bob):
    for owner, count in ((alice, 7), (bob, 3)):
        for i in range(count):
            Job.objects.create(
                owner=owner, kind="demo_train", status="succeeded" if i % 2 else "queued", params={"i": i}
            )


def test_rows_are_what_the_orm_gives_for_the_same_values(jobs, alice, bob):
    statement = Statement(jobs_query)
    for user in (alice, bob):
        orm = Job.objects.filter(owner=user).values("id", "status", "params", owner_name=F("owner__username"))
        orm = orm.order_by("-id")
        assert statement.rows(shape={"with_status": False}, values={"owner": user.pk}) == list(orm)
        succeeded = statement.rows(
            shape={"with_status": True}, values={"owner": user.pk, "status": "succeeded"}
        )
        assert succeeded == list(orm.filter(status="succeeded"))
    # The JSON column comes decoded, as the ORM's converters decode it.
    assert statement.rows(values={"owner": alice.pk}, shape={"with_status": False})[-1]["params"] == {"i": 0}


def test_pages_are_the_orm_slices(jobs, alice):
    """PageOf: the ids of one page of an ordered queryset, LIMIT and OFFSET from the statement's values."""

    def page_first():
        ids = Job.objects.filter(owner_id=OWNER).order_by("-id").values("id")
        return Job.objects.filter(id__in=PageOf(ids)).order_by("-id").values("id", "status")

    statement = Statement(page_first)
    orm = list(Job.objects.filter(owner=alice).order_by("-id").values_list("id", flat=True))
    pages = [
        [row["id"] for row in statement.rows(values={"owner": alice.pk, "limit": 3, "offset": offset})]
        for offset in (0, 3, 6, 9)
    ]
    assert pages == [orm[0:3], orm[3:6], orm[6:9], []]
    with CaptureQueriesContext(connection) as captured:
        statement.rows(values={"owner": alice.pk, "limit": 2, "offset": 1})
    [sql] = [query["sql"] for query in captured.captured_queries]
    assert "LIMIT 2" not in sql and "OFFSET 1" not in sql  # placeholders: one SQL text for every page


def test_built_and_compiled_once_per_shape_then_one_query_per_run(jobs, alice, bob):
    builds = []

    def build(**shape):
        builds.append(shape)
        return jobs_query(**shape)

    statement = Statement(build)
    for user in (alice, bob, alice):
        with CaptureQueriesContext(connection) as captured:
            statement.rows(shape={"with_status": False}, values={"owner": user.pk})
        assert len(captured.captured_queries) == 1
    statement.rows(shape={"with_status": True}, values={"owner": bob.pk, "status": "queued"})
    statement.rows(shape={"with_status": True}, values={"owner": alice.pk, "status": "succeeded"})
    assert builds == [{"with_status": False}, {"with_status": True}]


def test_values_are_prepared_by_the_slot_field(jobs, alice):
    """An id given as text is made a number, as ``filter(owner_id="…")`` would."""
    statement = Statement(jobs_query)
    as_text = statement.rows(shape={"with_status": False}, values={"owner": str(alice.pk)})
    assert len(as_text) == 7


def test_what_a_statement_cannot_run_is_refused(db, alice):
    with pytest.raises(ValueError, match="Page a statement with PageOf"):
        Statement(lambda: jobs_query(with_status=False)[:5]).rows(values={"owner": alice.pk})
    with pytest.raises(ValueError, match="names its columns with values"):
        Statement(lambda: Job.objects.filter(owner_id=OWNER)).rows(values={"owner": alice.pk})
    with pytest.raises(ValueError, match="PageOf pages an ordered queryset"):  # pages would be arbitrary
        PageOf(Job.objects.order_by().values("id"))
    with pytest.raises(KeyError):  # a slot left without a value
        Statement(jobs_query).rows(shape={"with_status": True}, values={"owner": alice.pk})


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in cursor.fetchall()]


def test_postgresql_prepares_a_statement_once_it_has_run_a_few_times(jobs, alice, bob):
    """Bound on the server, so psycopg prepares it after ``prepare_threshold`` runs on the connection
    (DATABASE_PREPARED_STATEMENTS) and PostgreSQL no longer plans it on each run; the rows stay the same
    for every user's values."""
    statement = Statement(jobs_query)
    shape = {"with_status": False}
    threshold = connection.connection.prepare_threshold
    assert threshold is not None  # on by default
    first = [statement.rows(shape=shape, values={"owner": alice.pk}) for _ in range(threshold)]
    assert not any("owner_id" in sql for sql in prepared_statements())
    for user in (alice, bob, alice):
        with CaptureQueriesContext(connection) as queries:
            rows = statement.rows(shape=shape, values={"owner": user.pk})
        assert len(queries) == 1  # still seen by Django's debug cursor
        orm = Job.objects.filter(owner=user).order_by("-id")
        assert [row["id"] for row in rows] == list(orm.values_list("id", flat=True))
    assert rows == first[0]
    [prepared] = [sql for sql in prepared_statements() if "owner_id" in sql]
    assert "$1" in prepared  # the value bound by PostgreSQL, not written into the SQL


def test_prepared_statements_are_off_where_the_setting_says(jobs, alice, monkeypatch):
    """DATABASE_PREPARED_STATEMENTS=false (a PgBouncer before 1.21 in transaction mode): never prepared."""
    monkeypatch.setattr(connection.connection, "prepare_threshold", None)
    statement = Statement(jobs_query)
    for _ in range(10):
        statement.rows(shape={"with_status": False}, values={"owner": alice.pk})
    assert not any("owner_id" in sql for sql in prepared_statements())
