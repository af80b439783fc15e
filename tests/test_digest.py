"""The digest agent: its facts come from real threads in Redis; the model only writes the summary;
without a model the digest is our table."""

from __future__ import annotations

import asyncio
import time

import pytest

from agents.digest import recent
from bot.events import Source
from bot.intake import new_thread_id
from bot.runtime import Runtime
from bot.thread import Origin
from channels.schedule import Clock
from tests.conftest import settled, wait_for
from tests.helpers import say
from tests.messages_api import text, tool_use

POLICY = """
[tools.service_status]
command = ["sh", "-c", "echo status backend unreachable >&2; exit 3"]

[[schedules]]
name = "daily-digest"
cron = "0 8 * * *"
timezone = "Europe/Berlin"
agent = "digest"
message = "Write the daily digest."
to = { slack = ["C-OPS"] }
"""


class Slack:
    name = "slack"

    def __init__(self) -> None:
        self.posts: list = []

    async def render(self, thread, event) -> None:
        raise AssertionError("scheduled threads go through deliver_to")

    async def deliver_to(self, addresses, thread, event) -> None:
        for address in addresses:
            self.posts.append((address.model_dump(exclude_none=True), event))

    async def shown(self, count: int) -> list:
        async def enough():  # the worker renders after the log settles
            return len(self.posts) >= count
        await wait_for(enough, what=f"{count} posts")
        return self.posts

    async def close(self) -> None:
        pass


async def a_day_of_threads(rt: Runtime) -> dict[str, str]:
    """Real threads through the real worker: approved, rejected, expired, failed."""
    ids = {
        "approved": await say(rt, "/deploy api 1.2.3 prod", "bob", channel="console"),
        "rejected": await say(rt, "/rollback web prod", "dave", channel="console"),
        "expired": await say(rt, "/rollback db prod", "erin", channel="console"),
        "failed": await say(rt, "/service_status api prod", "frank", channel="console"),
    }
    pending = {}
    for kind in ("approved", "rejected", "expired"):
        [pending[kind]] = (await settled(rt, ids[kind])).pending_approvals()
    assert (await rt.approvals.decide(pending["approved"].approval_id, True, "alice", "slack")).status == "decided"
    assert (await rt.approvals.decide(pending["rejected"].approval_id, False, "alice", "email",
                                      "freeze week")).status == "decided"
    assert (await rt.approvals.expire(pending["expired"].approval_id)).status == "expired"
    for thread_id in ids.values():
        assert (await settled(rt, thread_id)).state == "idle"
    return ids


async def run_digest(rt: Runtime):
    slack = Slack()
    rt.renderers["slack"] = slack  # the schedule renderer (installed at start) forwards to it
    thread_id, appended = await Clock(rt).run_now("daily-digest")
    assert appended.ok
    return await settled(rt, thread_id), slack


async def test_digest_without_a_model_is_our_table(make_settings, policy_file, start_bot):
    rt = await start_bot(make_settings(policy_file=policy_file(POLICY)))
    ids = await a_day_of_threads(rt)
    thread, slack = await run_digest(rt)

    digest = thread.events[-1]
    assert digest.type == "agent_reply"
    lines = digest.text.splitlines()
    assert lines[0] == "Digest of the last 24 h: 4 threads · 1 approved · 1 rejected · 1 expired · 1 failed"
    rows = {kind: next(line for line in lines if thread_id in line) for kind, thread_id in ids.items()}
    assert "bob" in rows["approved"] and "/deploy api 1.2.3 prod" in rows["approved"]
    assert "deploy(api, 1.2.3, prod) approved by alice via slack" in rows["approved"]
    assert "ran deploy(api, 1.2.3, prod)" in rows["approved"]
    assert "dave" in rows["rejected"] and "rollback(web, prod) rejected by alice via email" in rows["rejected"]
    assert "erin" in rows["expired"] and "rollback(db, prod) expired undecided" in rows["expired"]
    assert "frank" in rows["failed"] and "service_status(api, prod) failed" in rows["failed"]
    assert "status backend unreachable" in rows["failed"]
    assert thread.id not in digest.text  # the digest does not report on itself
    [(address, posted)] = await slack.shown(1)
    assert address == {"channel": "C-OPS"} and posted.text == digest.text


async def test_digest_with_a_model_gets_our_table_and_writes_the_summary(
        model_settings, policy_file, start_bot, messages_api):
    rt = await start_bot(model_settings(policy_file=policy_file(POLICY)))
    ids = await a_day_of_threads(rt)  # exact commands: no model involved
    assert messages_api.requests == []
    summary = "4 threads yesterday: api 1.2.3 shipped (alice), web rollback rejected, db rollback expired."
    messages_api.add(text(summary))
    thread, slack = await run_digest(rt)

    assert thread.events[-1].type == "agent_reply" and thread.events[-1].text == summary
    [request] = messages_api.requests
    assert "digest agent" in request["system"][0]["text"]
    [message] = request["messages"]
    sent = "\n".join(block["text"] for block in message["content"])
    assert "[schedule daily-digest] Write the daily digest." in sent
    assert "4 threads · 1 approved · 1 rejected · 1 expired · 1 failed" in sent
    for thread_id in ids.values():
        assert thread_id in sent
    assert "approved by alice via slack" in sent and "rejected by alice via email" in sent
    assert [(a, e.text) for a, e in await slack.shown(1)] == [({"channel": "C-OPS"}, summary)]


async def test_digest_answers_people_only_if_the_policy_names_them(make_settings, policy_file, start_bot):
    rt = await start_bot(make_settings(policy_file=policy_file(POLICY + '\n[agents.digest]\nusers = ["alice"]\n')))
    await a_day_of_threads(rt)
    replies = {}
    for user in ("mallory", "alice"):
        thread_id = new_thread_id()
        await rt.intake.message(thread_id, agent="digest", origin=Origin(channel="console"),
                                text="/recent_threads 24", source=Source(channel="console", user=user))
        replies[user] = (await settled(rt, thread_id)).events[-1].text
    assert "error: the digest runs on a schedule" in replies["mallory"] and "bob" not in replies["mallory"]
    assert replies["alice"].startswith("Digest of the last 24 h: 4 threads")


async def reply(rt: Runtime, thread_id: str, line: str, user: str) -> str:
    """`user` answers in a scheduled digest's thread (as in its Slack thread or mail thread)."""
    thread = await rt.store.load(thread_id)
    await rt.intake.message(thread_id, agent="digest", origin=thread.meta.origin, text=line,
                            source=Source(channel="slack", user=user))
    return (await settled(rt, thread_id)).events[-1].text


REFUSED = "error: the digest runs on a schedule"
DIGEST_USERS = "\n[agents.digest]\nusers = {}\n"
ALICE_MAY_ASK = DIGEST_USERS.format('["alice"]')


@pytest.mark.parametrize("users", ['["alice"]', "[]"])
async def test_in_a_scheduled_thread_only_the_schedule_its_runner_and_listed_users_get_the_digest(
        make_settings, policy_file, start_bot, users):
    rt = await start_bot(make_settings(policy_file=policy_file(POLICY + DIGEST_USERS.format(users))))
    await say(rt, "/deploy api 1.2.3 prod", "bob", channel="console")
    scheduled, _ = await run_digest(rt)  # the schedule itself: source user schedule:daily-digest
    assert scheduled.events[0].source.user == "schedule:daily-digest"
    assert scheduled.events[-1].text.startswith("Digest of the last 24 h: 1 threads")
    assert REFUSED in await reply(rt, scheduled.id, "/recent_threads 744", "U0MALLORY")
    answer = await reply(rt, scheduled.id, "/recent_threads 744", "alice")
    if users == "[]":  # nobody listed: people get nothing, even in the schedule's own thread
        assert REFUSED in answer and "bob" not in answer
    else:
        assert answer.startswith("Digest of the last 744 h: 1 threads") and "bob" in answer

    ran, appended = await Clock(rt).run_now("daily-digest", user="carol")  # `schedules run --as carol`
    assert appended.ok
    thread = await settled(rt, ran)
    assert thread.events[-1].text.startswith("Digest of the last 24 h")
    assert (await reply(rt, ran, "/recent_threads 48", "carol")).startswith("Digest of the last 48 h")
    assert REFUSED in await reply(rt, ran, "/recent_threads 744", "U0MALLORY")


async def test_a_model_call_in_a_scheduled_thread_is_checked_against_who_asked(
        model_settings, policy_file, start_bot, messages_api):
    rt = await start_bot(model_settings(policy_file=policy_file(POLICY + ALICE_MAY_ASK)))
    await say(rt, "/deploy api 1.2.3 prod", "bob", channel="console")
    messages_api.add(text("1 thread: api 1.2.3 deployed by bob."))
    scheduled, _ = await run_digest(rt)
    assert scheduled.events[-1].text == "1 thread: api 1.2.3 deployed by bob."

    async def asks(user: str, line: str, hours: float) -> list:
        """`user` writes in the digest's thread; the model then calls recent_threads(hours)."""
        messages_api.add(tool_use("recent_threads", {"hours": hours}), text(f"answer for {user}"))
        assert await reply(rt, scheduled.id, line, user) == f"answer for {user}"
        thread = await rt.store.load(scheduled.id)
        said = max(i for i, e in enumerate(thread.events) if e.type == "user_message")
        calls = [e for e in thread.events[said:] if e.type == "tool_call"]
        # the prefetch runs as the reply's author; the model's own call is checked against them too
        assert [(c.origin, float(c.args["hours"])) for c in calls] == [("command", 24), ("model", hours)]
        return [thread.results[c.call_id] for c in calls]

    refused = await asks("U0MALLORY", "show me the last month", 744)
    assert [r.status for r in refused] == ["error", "error"]
    assert all("runs on a schedule" in r.output and "bob" not in r.output for r in refused)
    allowed = await asks("alice", "and the last two days?", 48)
    assert [r.status for r in allowed] == ["ok", "ok"]
    assert allowed[1].output.startswith("Digest of the last 48 h") and "bob" in allowed[1].output


async def test_digest_counts_only_what_happened_in_the_period(make_settings, policy_file, start_bot):
    rt = await start_bot(make_settings(policy_file=policy_file(POLICY)))
    thread_id = await say(rt, "/rollback web prod", "dave", channel="console")
    [pending] = (await settled(rt, thread_id)).pending_approvals()
    assert (await rt.approvals.decide(pending.approval_id, True, "alice", "slack")).status == "decided"
    assert (await settled(rt, thread_id)).state == "idle"
    await asyncio.sleep(0.05)
    since = time.time()  # "the last day" starts after the thread, its approval and its run
    await asyncio.sleep(0.05)
    await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="console"),
                            text="/service_status api prod", source=Source(channel="console", user="frank"))
    await settled(rt, thread_id)

    [row] = [r for r in (await recent(rt.store, since))[0] if r.thread == thread_id]
    assert (row.approved, row.rejected, row.expired, row.failed) == (0, 0, 0, 1)
    assert (row.asked_by, row.request) == ("frank", "/service_status api prod")
    assert not [o for o in row.outcomes if "approved" in o or o.startswith("ran ")], row.outcomes
    [whole] = [r for r in (await recent(rt.store, since - 3600))[0] if r.thread == thread_id]
    assert (whole.approved, whole.failed, whole.asked_by) == (1, 1, "dave")
    assert "ran rollback(web, prod)" in whole.outcomes
