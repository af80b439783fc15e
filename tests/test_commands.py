"""Exact commands with no model configured: same validation, same approvals, same log."""

from __future__ import annotations

from tests.conftest import settled
from tests.helpers import runbook_lines, say


async def test_exact_commands_work_offline_including_approval(make_settings, start_bot):
    settings = make_settings()
    rt = await start_bot(settings)
    thread = await settled(rt, await say(rt, "/service_status api staging"))
    assert thread.events[-1].text.startswith("api in staging: healthy")

    thread = await settled(rt, await say(rt, "/deploy service=api version=1.2.3 environment=prod"))
    assert thread.state == "awaiting_approval" and runbook_lines(settings) == ["service_status api staging"]
    [request] = thread.pending_approvals()
    assert request.args == {"service": "api", "version": "1.2.3", "environment": "prod"}
    await rt.approvals.decide(request.approval_id, True, "alice", "console")
    thread = await settled(rt, thread.id)
    assert thread.events[-1].text.startswith("Deployed api 1.2.3 to prod")
    assert runbook_lines(settings)[-1] == "deploy api 1.2.3 prod"


async def test_positional_and_invalid_commands(make_settings, start_bot):
    settings = make_settings()
    rt = await start_bot(settings)
    thread = await settled(rt, await say(rt, "/deploy api 1.2.3 staging"))
    assert thread.events[-1].text.startswith("Deployed api 1.2.3 to staging")

    thread = await settled(rt, await say(rt, "/deploy api 1.2.3 moon"))
    assert thread.events[-1].text == ("/deploy: environment 'moon' is not valid (one of: dev, staging, "
                                      "prod).\nusage: /deploy <service> <version> <environment>")

    thread = await settled(rt, await say(rt, "/deploy 'api; rm -rf /' 1.0 dev"))
    assert "/deploy: service 'api; rm -rf /' is not valid." in thread.events[-1].text

    # no pydantic text ("Field required", regex patterns): what is missing, and the usage line
    thread = await settled(rt, await say(rt, "/deploy"))
    assert thread.events[-1].text == ("/deploy: missing service, version, environment.\n"
                                      "usage: /deploy <service> <version> <environment>")
    assert not any(e.type == "tool_call" for e in thread.events)

    thread = await settled(rt, await say(rt, "/launch rockets"))
    assert "unknown command /launch" in thread.events[-1].text
    assert "/deploy <service> <version> <environment>" in thread.events[-1].text
    assert runbook_lines(settings) == ["deploy api 1.2.3 staging"]


async def test_free_text_without_a_model_lists_the_commands(make_settings, start_bot):
    rt = await start_bot(make_settings())
    thread = await settled(rt, await say(rt, "please deploy api"))
    assert thread.events[-1].text.startswith("No model is configured")
    assert "/rollback <service> <environment>" in thread.events[-1].text
