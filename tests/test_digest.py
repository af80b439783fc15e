"""The digest agent: its facts come from real threads in Redis; the model only writes the summary;
without a model the digest is our table."""

from __future__ import annotations

from bot.events import Source
from bot.intake import new_thread_id
from bot.runtime import Runtime
from bot.thread import Origin
from channels import schedule as schedule_channel
from channels.schedule import Clock
from tests.conftest import settled, wait_for
from tests.messages_api import text

POLICY = """
[tools.service_status]
command = ["sh", "-c", "echo status backend unreachable >&2; exit 3"]

[[schedules]]
name = "daily-digest"
cron = "0 8 * * *"
timezone = "Europe/Berlin"
agent = "digest"
message = "Write the daily digest."
slack_channel = "C-OPS"
"""


class Slack:
    name = "slack"

    def __init__(self) -> None:
        self.posts: list = []

    async def render(self, thread, event) -> None:
        raise AssertionError("scheduled threads go through render_to")

    async def render_to(self, address, thread, event) -> None:
        self.posts.append((address, event))

    async def shown(self, count: int) -> list:
        async def enough():  # the worker renders after the log settles
            return len(self.posts) >= count
        await wait_for(enough, what=f"{count} posts")
        return self.posts

    async def close(self) -> None:
        pass


async def say(rt: Runtime, line: str, user: str) -> str:
    thread_id = new_thread_id()
    await rt.intake.message(thread_id, agent="deploy", origin=Origin(channel="console"), text=line,
                            source=Source(channel="console", user=user))
    return thread_id


async def a_day_of_threads(rt: Runtime) -> dict[str, str]:
    """Real threads through the real worker: approved, rejected, expired, failed."""
    ids = {
        "approved": await say(rt, "/deploy api 1.2.3 prod", "bob"),
        "rejected": await say(rt, "/rollback web prod", "dave"),
        "expired": await say(rt, "/rollback db prod", "erin"),
        "failed": await say(rt, "/service_status api prod", "frank"),
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
    rt.renderers["slack"] = slack
    schedule_channel.service(rt, None).close()  # registers the schedule renderer
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
