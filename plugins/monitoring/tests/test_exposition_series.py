"""Every series of the exposition is exposed once: label values that escape to the same
text (a lone surrogate becomes U+FFFD) are one series, else Prometheus refuses the whole
scrape for its duplicate samples."""

from __future__ import annotations

from collections import Counter

from aieng_hookspecs.types import FirstToken, Message, ModelCall, RunFinished, TokenEvent, Usage
from aieng_monitoring import Monitor, MonitorOptions, Price
from prometheus_client.parser import text_string_to_metric_families


def _call(run: str, model: str) -> ModelCall:
    return ModelCall(run_id=run, pipeline="p", component="llm", messages=(Message("user", "q"),),
                     parameters={"model": model}, usage=Usage(2, 3), duration_s=0.5)


def test_models_that_escape_alike_are_one_series() -> None:
    """A client's model name with a lone surrogate (a JSON ``"\\ud800"`` escape) and the
    same name with U+FFFD are counted, priced and exposed as one model."""
    monitor = Monitor(MonitorOptions(log_runs=False, prices={"x\ufffd": Price(1.0, 1.0)}))
    monitor.aieng_on_event(_call("a", "x\ud800"))
    monitor.aieng_on_event(_call("b", "x\ufffd"))
    monitor.aieng_on_event(FirstToken(run_id="c", pipeline="p", component="llm", ttft_s=0.1,
                                      model="x\udc00"))
    monitor.aieng_on_event(TokenEvent(run_id="c", pipeline="p", component="llm", text="t",
                                      index=0))
    for run in "abc":
        monitor.aieng_on_event(RunFinished(run_id=run, pipeline="p", status="ok",
                                           duration_s=1.0))
    text = monitor.prometheus_text()
    series = Counter((s.name, tuple(sorted(s.labels.items())))
                     for family in text_string_to_metric_families(text)
                     for s in family.samples)
    assert [key for key, n in series.items() if n > 1] == []
    snap = monitor.snapshot()
    assert snap["model_calls"] == {"pipeline=p,model=x\ufffd,streamed=false": 2,
                                   "pipeline=p,model=x\ufffd,streamed=true": 1}
    assert snap["unpriced_calls"] == {}
    assert snap["tokens"]["pipeline=p,model=x\ufffd,direction=output"] == 3 + 3 + 1
