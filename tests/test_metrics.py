"""GET /metrics (Prometheus text, prometheus-client): behind the API token on the HTTP API, or
on a port of its own; after a deploy flow the counters moved. Parsed with prometheus_client's
own parser, as a scraper would."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bot.api import create_app
from bot.metrics import metrics_app
from tests.conftest import settled
from tests.helpers import say
from tests.messages_api import text, tool_use

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def samples(body: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(s: dict, name: str, **labels: str) -> float:
    return s.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_after_a_deploy_flow(model_settings, start_bot, messages_api, serve):
    settings = model_settings(api_token=TOKEN)
    rt = await start_bot(settings)
    url = await serve(create_app(rt))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
        before = samples((await http.get("/metrics", headers=AUTH)).text)

        messages_api.add(tool_use("deploy", {"service": "api", "version": "1.2.3", "environment": "prod"}),
                         text("live"))
        thread_id = await say(rt, "ship api 1.2.3 to prod")
        [request] = (await settled(rt, thread_id)).pending_approvals()
        pending = samples((await http.get("/metrics", headers=AUTH)).text)
        assert value(pending, "chatops_approvals_pending") >= 1
        await rt.approvals.decide(request.approval_id, True, "alice", "console")
        assert (await settled(rt, thread_id)).state == "idle"

        response = await http.get("/metrics", headers=AUTH)
        assert response.headers["content-type"].startswith("text/plain")
        after = samples(response.text)

    def moved(name: str, by: float = 1, **labels: str) -> None:
        assert value(after, name, **labels) - value(before, name, **labels) >= by, (name, labels)

    moved("chatops_events_appended_total", type="user_message")
    moved("chatops_events_appended_total", type="tool_started")
    moved("chatops_events_appended_total", type="approval_decided")
    moved("chatops_step_seconds_count", 2, kind="CallModel")
    moved("chatops_step_seconds_count", kind="RequestApproval")
    moved("chatops_step_seconds_count", kind="RunTool")
    moved("chatops_model_call_seconds_count", 2)
    moved("chatops_model_tokens_total", 20, kind="input")
    moved("chatops_model_tokens_total", 10, kind="output")
    moved("chatops_tool_run_seconds_count", tool="deploy", status="ok")
    moved("chatops_approvals_decided_total", outcome="approved")
    moved("chatops_approval_decision_seconds_count")
    assert ("chatops_inbox_lag", frozenset()) in after
    assert ("chatops_inbox_pending", frozenset()) in after
    assert value(after, "chatops_approvals_pending") == value(pending, "chatops_approvals_pending") - 1


async def test_model_errors_are_counted_by_kind(model_settings, start_bot, messages_api, serve):
    from tests.messages_api import error

    rt = await start_bot(model_settings(model_retries=0))
    url = await serve(metrics_app(rt))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        before = samples((await http.get("/metrics")).text)
        messages_api.add(error(400, "invalid_request_error"))
        await settled(rt, await say(rt, "hello"))
        after = samples((await http.get("/metrics")).text)
    assert value(after, "chatops_model_errors_total", kind="http_400") \
        - value(before, "chatops_model_errors_total", kind="http_400") == 1


async def test_the_shipped_dashboard_only_uses_metrics_we_expose(make_settings, runtime, serve):
    import json
    import re

    from tests.conftest import ROOT

    rt = await runtime(make_settings())
    url = await serve(metrics_app(rt))
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        families = list(text_string_to_metric_families((await http.get("/metrics")).text))
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    exposed = {f.name + suffix for f in families for suffix in suffixes.get(f.type, [])}
    dashboard = json.loads((ROOT / "ops" / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"chatops_[a-z_]+", target["expr"])}
    assert used and used <= exposed, used - exposed


async def test_a_worker_process_serves_metrics_on_its_own_port(make_settings):
    import signal

    from tests.conftest import spawn_bot, wait_for
    from tests.redis_ha import free_port

    port = free_port()
    bot = spawn_bot(make_settings(), "worker", CHATOPS_METRICS_PORT=str(port))
    try:
        async def scraped():
            try:
                async with httpx.AsyncClient(timeout=5) as http:
                    r = await http.get(f"http://127.0.0.1:{port}/metrics")
                return r.status_code == 200 and r.text
            except httpx.HTTPError:
                return None
        body = await wait_for(scraped, 60, "the worker's metrics port")
        assert ("chatops_inbox_lag", frozenset()) in samples(body)
    finally:
        bot.send_signal(signal.SIGTERM)
        bot.output(timeout=60)
    assert bot.returncode == 0
