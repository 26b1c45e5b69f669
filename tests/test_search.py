"""Search finds words in every script (issue 9, item 8): substrings of text written without spaces."""

from __future__ import annotations

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
        ("Café au lait", "cafe"),  # diacritics still folded by the word index
    ],
)
def test_substrings_in_many_scripts(queue: TaskQueue, title: str, query: str) -> None:
    task = queue.create({"title": title})
    queue.create({"title": "unrelated"})
    assert [t.id for t in queue.list(query=query).tasks] == [task.id]


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
