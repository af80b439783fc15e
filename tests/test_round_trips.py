"""An append is one round trip: counted with INFO commandstats on a redis-server of the test's own
(counts of calls, not time), also right after the server lost its scripts."""

from __future__ import annotations

import time

import redis as sync_redis

from bot.events import AgentReply, UserMessage
from bot.intake import new_thread_id
from bot.thread import Origin, ThreadMeta


def calls(url: str) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT (INFO commandstats)."""
    stats = sync_redis.Redis.from_url(url).info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def reset(url: str) -> None:
    sync_redis.Redis.from_url(url).config_resetstat()


def requests_of(counted: dict[str, int]) -> int:
    """Round trips of our appends: one pipeline per EVALSHA, plus every SCRIPT command (redis-py
    sends SCRIPT EXISTS / LOAD alone, before the pipeline), plus any EVAL sent alone."""
    return counted.get("evalsha", 0) + counted.get("script|exists", 0) + counted.get("script|load", 0) \
        + counted.get("eval", 0)


async def test_an_append_is_one_round_trip(make_settings, runtime, own_redis):
    rt = await runtime(make_settings(redis_url=own_redis.url))
    thread_id = new_thread_id()
    meta = ThreadMeta(id=thread_id, agent="deploy", origin=Origin(channel="api"), created=time.time())
    await rt.store.append(thread_id, UserMessage(text="hi"), create=meta)  # loads the script
    reset(own_redis.url)
    for i in range(20):
        assert (await rt.store.append(thread_id, AgentReply(text=f"reply {i}"), wake=True)).ok
    counted = calls(own_redis.url)
    assert counted.get("evalsha") == 20
    assert requests_of(counted) == 20, counted  # no SCRIPT EXISTS before each pipeline
    assert "script|exists" not in counted and "eval" not in counted


async def test_an_append_after_the_server_lost_its_scripts_loads_it_once(make_settings, runtime, own_redis):
    rt = await runtime(make_settings(redis_url=own_redis.url))
    thread_id = new_thread_id()
    meta = ThreadMeta(id=thread_id, agent="deploy", origin=Origin(channel="api"), created=time.time())
    await rt.store.append(thread_id, UserMessage(text="hi"), create=meta)
    sync_redis.Redis.from_url(own_redis.url).script_flush()
    reset(own_redis.url)
    for i in range(5):
        assert (await rt.store.append(thread_id, AgentReply(text=f"reply {i}"))).ok
    counted = calls(own_redis.url)
    assert counted.get("script|load") == 1 and counted.get("evalsha") == 6  # one NOSCRIPT, resent once
    thread = await rt.store.load(thread_id)
    assert [e.text for e in thread.events[1:]] == [f"reply {i}" for i in range(5)]  # each once
