"""Untrusted HTTP input over a real uvicorn server on 127.0.0.1: client text never reaches
a response header, and what a client sends is bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _support import FlakyBackend, LoopbackServer, make_gateway
from aieng_gateway import Gateway, GatewaySettings
from aieng_gateway._exposition import merge_exposition
from prometheus_client.parser import text_string_to_metric_families

from aieng_core.testing import isolated_kernel


@pytest.fixture(scope="module")
def sinkless() -> Iterator[httpx.Client]:
    """A client of a gateway (auth off) whose pipeline has no feedback sink: feedback is a
    501 error answer."""
    gateway = Gateway(lambda kernel: kernel.compose({"llm": FlakyBackend()}, name="test"),
                      settings=GatewaySettings(auth=False),
                      kernel=lambda: isolated_kernel(loop_block_threshold=None))
    with LoopbackServer(gateway.app) as server, \
            server.client(timeout=20) as client:
        yield client


@pytest.mark.parametrize("run_id", ["r\r\nx-evil: 1", "r\nset-cookie: a=b", "snow\u2603man",
                                    "tab\there"])
def test_a_feedback_run_id_never_reaches_a_header(sinkless: httpx.Client,
                                                  run_id: str) -> None:
    """A feedback body's run id is the client's text: an error answer does not echo it in
    ``x-aieng-run-id`` (a line break there dropped the connection with a traceback, a
    non-Latin-1 character was a bare 500), it answers the error."""
    response = sinkless.post("/v1/feedback", json={"run_id": run_id, "kind": "thumbs"})
    assert response.status_code == 501, response.text
    assert response.json()["error"]["code"] == "no_feedback_sink"
    assert "x-evil" not in response.headers and "set-cookie" not in response.headers
    assert response.headers.get("x-aieng-run-id") in (None, run_id)


def test_a_plain_feedback_run_id_is_still_echoed(sinkless: httpx.Client) -> None:
    """An ordinary run id (what the gateway hands out) is still named in the error."""
    run_id = "chatcmpl-0123456789abcdef01234567"
    response = sinkless.post("/v1/feedback", json={"run_id": run_id, "kind": "thumbs"})
    assert response.status_code == 501
    assert response.headers["x-aieng-run-id"] == run_id


@pytest.mark.parametrize("model", ["a\rforged_total 999\r", "b\u2028forged_total 999\u2028",
                                   "c\x85forged_total 999\x0b"])
def test_a_model_name_cannot_forge_a_metric_line(tmp_path: Path, model: str) -> None:
    """A client names the model, which the monitor shows as a label value. Prometheus
    ends a line at LF only (escaped in label values); the merge of the components' texts
    split at every line break ``str.splitlines`` knows (CR, U+2028, U+0085...), so a raw
    one in a label value made a sample line of the client's choosing and broke the
    scrape."""
    gateway = make_gateway(tmp_path, settings=GatewaySettings(auth=False))
    with LoopbackServer(gateway.app) as server, \
            server.client(timeout=20) as client:
        answer = client.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
        text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "forged" not in families
    assert not any(line.startswith("forged") for line in text.split("\n"))
    calls = families["aieng_model_calls"].samples
    assert [s.labels["model"] for s in calls if s.labels["model"] != "test"] == [model]


def test_merge_keeps_a_label_value_with_a_carriage_return_whole() -> None:
    """merge_exposition splits lines at LF only, as the text format does."""
    text = ('# HELP m_total x\n# TYPE m_total counter\n'
            'm_total{model="a\rz_total 9\r\u2028"} 1\n')
    assert merge_exposition([text]) == text
