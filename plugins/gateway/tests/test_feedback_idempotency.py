"""POST /v1/feedback retried: an ``Idempotency-Key`` header (or a body's
``metadata.feedback_id``) makes it one signal in the real ``feedback-sqlite`` store (a real
SQLite file), answered as the first POST was; a signal the store refuses is 422
``invalid_feedback``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _support import LoopbackServer
from aieng_gateway import Gateway


@pytest.fixture
def client(served: tuple[Gateway, LoopbackServer], api_key: str) -> Iterator[httpx.Client]:
    with served[1].client(headers={"Authorization": f"Bearer {api_key}"}, timeout=20) as http:
        yield http


def _run(client: httpx.Client, text: str) -> str:
    answer = client.post("/v1/chat/completions", json={
        "model": "test", "messages": [{"role": "user", "content": text}]})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _rows(gateway: Gateway, run_id: str) -> list[tuple[str, float, dict[str, Any]]]:
    path = Path(gateway.pipeline.components["feedback"].path)  # type: ignore[attr-defined]
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT kind, value, metadata FROM feedback WHERE run_id = ? "
                           "ORDER BY id", (run_id,)).fetchall()
    return [(kind, value, json.loads(metadata)) for kind, value, metadata in found]


def test_a_retried_post_with_an_idempotency_key_is_one_signal(
        client: httpx.Client, served: tuple[Gateway, LoopbackServer]) -> None:
    run_id = _run(client, "retry my thumbs")
    body = {"run_id": run_id, "kind": "thumbs", "value": 1}
    first = client.post("/v1/feedback", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/feedback", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    rows = _rows(served[0], run_id)
    key_id = rows[0][2]["key_id"]
    # Stored scoped by the sending key (another key's "k-1" is another signal).
    assert len(rows) == 1 and rows[0][2]["feedback_id"] == f"{key_id}:k-1"
    assert first.json() == again.json() == {"run_id": run_id, "kind": "thumbs",
                                            "recorded": 1, "feedback_id": "k-1"}
    assert rows[0][2]["key_id"]  # the sending key's id is still added
    other = client.post("/v1/feedback", json=body, headers={"Idempotency-Key": "k-2"})
    assert other.status_code == 200 and len(_rows(served[0], run_id)) == 2


def test_a_body_feedback_id_alone_or_equal_to_the_header_is_one_signal(
        client: httpx.Client, served: tuple[Gateway, LoopbackServer]) -> None:
    run_id = _run(client, "retry my rating")
    body = {"run_id": run_id, "kind": "rating", "value": 4,
            "metadata": {"feedback_id": "b-1", "ui": "web"}}
    assert client.post("/v1/feedback", json=body).status_code == 200
    same = client.post("/v1/feedback", json=body, headers={"Idempotency-Key": "b-1"})
    assert same.status_code == 200 and same.json()["feedback_id"] == "b-1"
    rows = _rows(served[0], run_id)
    assert [(kind, meta["feedback_id"], meta["ui"]) for kind, _, meta in rows] == \
        [("rating", f"{rows[0][2]['key_id']}:b-1", "web")]


def test_a_header_and_a_body_id_that_differ_are_refused(
        client: httpx.Client, served: tuple[Gateway, LoopbackServer]) -> None:
    run_id = _run(client, "two ids")
    body = {"run_id": run_id, "kind": "thumbs", "value": 1,
            "metadata": {"feedback_id": "body-id"}}
    differ = client.post("/v1/feedback", json=body, headers={"Idempotency-Key": "header-id"})
    assert differ.status_code == 422, differ.text
    error = differ.json()["error"]
    assert error["param"] == "metadata.feedback_id" and "header-id" in error["message"]
    empty = client.post("/v1/feedback", json={"run_id": run_id, "kind": "thumbs"},
                        headers={"Idempotency-Key": ""})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "Idempotency-Key"
    twice = client.post("/v1/feedback", json={"run_id": run_id, "kind": "thumbs"},
                        headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
    assert twice.status_code == 400 and twice.json()["error"]["param"] == "Idempotency-Key"
    assert _rows(served[0], run_id) == []


@pytest.mark.parametrize(("body", "headers", "named"), [
    ({"kind": "thumbs", "value": 5}, {}, "from -1 to 1"),
    ({"kind": "thumbs", "value": 1, "metadata": {"feedback_id": 7}}, {}, "feedback_id"),
])
def test_a_signal_the_store_refuses_is_invalid_feedback(
        client: httpx.Client, served: tuple[Gateway, LoopbackServer], body: dict[str, Any],
        headers: dict[str, str], named: str) -> None:
    """The store's ``InvalidFeedback`` (a ``ValueError`` with ``status = 422``) is the
    client's to fix: 422 ``invalid_feedback`` with the store's message, not an upstream's
    ``upstream_invalid_request``."""
    run_id = _run(client, "refused signal")
    refused = client.post("/v1/feedback", json={"run_id": run_id, **body}, headers=headers)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_feedback" and error["type"] == "invalid_request_error"
    assert error["message"].startswith("invalid feedback: ") and named in error["message"]
    assert _rows(served[0], run_id) == []
