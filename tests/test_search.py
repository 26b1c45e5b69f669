"""Search finds words in every script (issue 9, item 8): substrings of text written without spaces."""

from __future__ import annotations

from typing import Any

import pytest
from mcp import Client

from mcp_taskqueue.queue import TaskQueue
from tests.mcp_calls import call

pytestmark = pytest.mark.anyio


async def test_chinese_substring_is_found(client: Client) -> None:
    """The issue's example: `部署` did not find `部署到生产环境`."""
    created = await call(client, "create_task", title="部署到生产环境")
    await call(client, "create_task", title="write the docs")
    for query in ("部署", "生产", "环境", "到生产环境", "部署 环境"):
        found = await call(client, "list_tasks", query=query)
        assert [t["id"] for t in found["tasks"]] == [created["id"]], query


@pytest.mark.parametrize(
    ("title", "query"),
    [
        ("デプロイを本番環境へ", "本番"),  # Japanese
        ("ติดตั้งระบบใหม่", "ระบบ"),  # Thai, vowel marks inside the word
        ("HTTP部署", "HTTP部"),  # ASCII glued to CJK
        ("HTTP部署", "http"),
        ("Migrate the authentication layer", "authentic"),  # a substring of an English word
        ("部署 café", "café"),
    ],
)
def test_substrings_in_many_scripts(queue: TaskQueue, title: str, query: str) -> None:
    task = queue.create({"title": title})
    queue.create({"title": "unrelated"})
    assert [t.id for t in queue.list(query=query).tasks] == [task.id]


@pytest.mark.sqlite_only("diacritic folding is SQLite's word index (unicode61); PostgreSQL's 'simple' keeps accents")
def test_diacritics_are_folded_by_the_word_index(queue: TaskQueue) -> None:
    task = queue.create({"title": "Café au lait"})
    assert [t.id for t in queue.list(query="cafe").tasks] == [task.id]


def test_search_follows_edits_and_description(queue: TaskQueue) -> None:
    task = queue.create({"title": "旧标题", "description": "包含关键字"})
    assert [t.id for t in queue.list(query="关键").tasks] == [task.id]
    queue.update(task.id, {"title": "新标题"})
    assert queue.list(query="旧标").tasks == []
    assert [t.id for t in queue.list(query="新标").tasks] == [task.id]


def test_short_or_odd_queries_answer_without_error(queue: TaskQueue) -> None:
    queue.create({"title": "abc"})
    assert queue.list(query="zz").tasks == []
    assert queue.list(query='"a" OR NOT *').tasks == []  # any text is a valid query: every term must match
    assert [t.title for t in queue.list(query="b").tasks] == ["abc"]


def test_a_thousand_glued_titles_find_only_their_own(queue: TaskQueue) -> None:
    """Many CJK titles sharing characters: each two-character query finds exactly the tasks that contain it."""
    titles = [f"服务{i:03d}部署到{'生产' if i % 3 == 0 else '测试'}环境" for i in range(300)]
    created = queue.create_many([{"title": t} for t in titles])
    found = {t.id for page in _pages(queue, "生产") for t in page}
    assert found == {task.id for task, title in zip(created, titles, strict=True) if "生产" in title}
    assert [t.id for t in queue.list(query="服务042").tasks] == [created[42].id]


def _pages(queue: TaskQueue, query: str) -> list[list]:  # type: ignore[type-arg]
    pages, cursor = [], None
    while True:
        page = queue.list(query=query, limit=200, cursor=cursor)
        pages.append(page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            return pages


@pytest.mark.parametrize("query", ["部署", "生产环境", "task 77"])
def test_the_search_is_driven_by_the_text_indexes(queue: TaskQueue, query: str) -> None:
    """On either engine the search looks tasks up through its text indexes, never walks every task
    (PostgreSQL: with sequential scans priced out, an index must be able to serve the query)."""
    queue.create_many(
        [{"title": f"task {i}", "description": "部署到生产环境" if i % 7 == 0 else ""} for i in range(300)]
    )

    def plan(tx: Any) -> str:
        clause, params = tx.search_clause(query)
        sql = f"SELECT seq FROM tasks WHERE {clause} ORDER BY priority, seq LIMIT 21"
        if queue.store.engine == "sqlite":
            rows = tx.conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            return " | ".join(row[3] for row in rows)
        tx.conn.execute("ANALYZE tasks")
        tx.conn.execute("SET LOCAL enable_seqscan = off")
        return " | ".join(row[0] for row in tx.conn.execute("EXPLAIN " + sql, params))

    text = queue.store.write(plan)
    if queue.store.engine == "sqlite":
        assert "SEARCH tasks USING INTEGER PRIMARY KEY" in text and "tasks_fts_trigram" in text, text
        assert "SCAN tasks " not in text + " ", text
    else:
        assert "Seq Scan" not in text and ("tasks_grams" in text or "tasks_trgm" in text), text


@pytest.mark.sqlite_only("the trigram vocabulary is SQLite's fts5vocab table")
def test_short_terms_expand_through_a_range_of_the_vocabulary(queue: TaskQueue) -> None:
    from mcp_taskqueue.store.queries import SHORT_TERM_SQL

    queue.create({"title": "部署"})
    plan = " | ".join(queue.store.explain(SHORT_TERM_SQL, ("ab", "ab\U0010ffff")))  # type: ignore[attr-defined]
    assert "VIRTUAL TABLE INDEX 6" in plan, plan  # 6: both bounds of the term range reach the vocabulary


@pytest.mark.parametrize(("prefix", "query"), [("a", "a zzqq"), ("ab", "ab zzqq"), ("部", "部")])
def test_a_short_term_starting_many_trigrams_loses_no_match(queue: TaskQueue, prefix: str, query: str) -> None:
    """A one- or two-character term that starts more than 500 distinct trigrams (a common character
    in a big queue) used to expand to only the first 500 of them: a task whose trigram sorted later
    was silently not found."""
    for start in (0, 260):  # two batches: a batch holds at most 500
        queue.create_many([{"title": prefix + chr(0x4E00 + i) * 2} for i in range(start, start + 260)])
    late = queue.create({"title": prefix + chr(0x4E00 + 599) * 2 + " zzqq"})
    found = {t.id for page in _pages(queue, query) for t in page}
    assert late.id in found
    if "zzqq" in query:
        assert found == {late.id}
    else:
        assert len(found) == 521
