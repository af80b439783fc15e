"""Schedules: each fire once across processes, misses on start within and outside the grace,
`chatops schedules`. Real Redis, real APScheduler, real processes. Where results go (the Slack
channel, the mailbox): tests/test_schedule_delivery.py."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from bot import cron
from bot.policy import ConfigError, load_policy
from bot.runtime import Runtime
from channels import schedule_keys
from channels.schedule import Clock, fire_thread_id
from tests.conftest import Bot, ROOT, bot_env, make_wiring, settled, spawn_bot, wait_for

FIRED = re.compile(r"schedule (\S+) fired for (\S+ \S+) UTC")
TAKEN = re.compile(r"schedule (\S+) at (\S+ \S+) UTC: taken by another process(?: \(with (\d+) earlier)?")


def schedule_toml(name: str, cron_expr: str, message: str, agent: str = "deploy", extra: str = "") -> str:
    return (f'[[schedules]]\nname = "{name}"\ncron = "{cron_expr}"\nagent = "{agent}"\n'
            f'message = "{message}"\nto = {{ slack = ["C-OPS"], email = ["ops@example.com"] }}\n{extra}\n')


def cron_at(ts: float) -> str:
    """A six-field cron expression (seconds first) firing daily at the whole second `ts` (UTC)."""
    t = datetime.fromtimestamp(ts, timezone.utc)
    return f"{t.second} {t.minute} {t.hour} * * *"


async def fires(rt: Runtime, name: str) -> list:
    """Every schedule_fired / schedule_missed event of schedule `name`, from the threads in Redis."""
    out = []
    for row in await rt.store.list_threads(limit=10_000):
        if row["origin"]["channel"] == "schedule" and row["origin"]["address"]["schedule"] == name:
            thread = await rt.store.load(row["id"])
            out += [e for e in thread.events if e.type in ("schedule_fired", "schedule_missed")]
    return out


def runbook_ran(settings) -> list[str]:
    log = settings.data_dir / "runbook.log"
    return log.read_text().splitlines() if log.exists() else []


async def start_together(rt: Runtime, spawn: Callable[[], list[Bot]]) -> list[Bot]:
    """A start barrier: spawn the clocks while writes are paused, wait until each is stopped at its
    first write, then let them all go at once, so they race from the same state."""
    await rt.redis.client_pause(60_000, all=False)
    procs: list[Bot] = []
    try:
        procs = spawn()

        async def all_waiting():
            return sum("b" in c["flags"] for c in await rt.redis.client_list()) >= len(procs)
        await wait_for(all_waiting, timeout=30, what="every clock to wait at its first write")
    except BaseException:
        for proc in procs:
            proc.kill()
        raise
    finally:
        await rt.redis.client_unpause()
    return procs


def attempts(log: str, name: str) -> tuple[list[float], list[tuple[float, int]]]:
    """From a clock's log: the fire times of `name` it won, and those it found taken (each with
    how many fire times it stands for)."""
    won = [_ts(m[2]) for m in FIRED.finditer(log) if m[1] == name]
    lost = [(_ts(m[2]), 1 + int(m[3] or 0)) for m in TAKEN.finditer(log) if m[1] == name]
    return won, lost


async def _done(task: asyncio.Task) -> bool:
    return task.done()


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


# ---- cron and policy ----------------------------------------------------------------------------

def test_cron_weekdays_mean_what_crontab_means():
    trigger = cron.parse("0 9 * * 1-5", "Europe/Berlin")
    now, days = time.time(), []
    for _ in range(10):
        now = cron.next_fire(trigger, now + 1)
        local = datetime.fromtimestamp(now, trigger.timezone)
        assert (local.hour, local.minute) == (9, 0)
        days.append(local.strftime("%a"))
    assert set(days) == {"Mon", "Tue", "Wed", "Thu", "Fri"}
    sunday = datetime.fromtimestamp(cron.next_fire(cron.parse("0 0 * * 0"), time.time()), timezone.utc)
    assert sunday.strftime("%a") == "Sun"
    for same in ("7", "sun"):
        other = datetime.fromtimestamp(cron.next_fire(cron.parse(f"0 0 * * {same}"), time.time()), timezone.utc)
        assert other == sunday


@pytest.mark.parametrize("line, setting", [
    ('cron = "61 * * * *"', "schedules.0.cron"),
    ('cron = "* * *"', "schedules.0.cron"),
    ('cron = "0 9 * * *"\ntimezone = "Mars/Olympus"', "schedules.0.timezone"),
])
def test_bad_cron_or_time_zone_stops_the_bot_naming_the_setting(policy_file, line, setting):
    path = policy_file(f'[[schedules]]\nname = "x"\n{line}\nagent = "deploy"\nmessage = "hi"\n')
    with pytest.raises(ConfigError, match=f"setting '{setting}'"):
        load_policy(path)


async def test_unknown_agent_is_a_config_error(make_settings, policy_file):
    settings = make_settings(policy_file=policy_file(schedule_toml("x", "0 9 * * *", "hi", agent="nope")))
    rt = await Runtime.start(settings, make_wiring())
    try:
        with pytest.raises(ConfigError, match=r"schedules.0.agent.*nope"):
            await Clock(rt).run()
    finally:
        await rt.close()


# ---- once across processes ----------------------------------------------------------------------

async def test_two_clocks_racing_for_the_same_fire_times_fire_each_once(make_settings, policy_file):
    settings = make_settings(policy_file=policy_file(schedule_toml("race", "0 9 * * *", "/help")))
    a, b = await Runtime.start(settings, make_wiring()), await Runtime.start(settings, make_wiring())
    try:
        [schedule] = a.policy.schedules
        clocks = [Clock(a), Clock(b)]
        times = [1_700_000_000.0 + 60 * i for i in range(20)]
        results = await asyncio.gather(*(c.fire(schedule, t) for t in times for c in clocks))
        assert sum(r.ok for r in results) == len(times)
        assert sum(c.stats["fired"] for c in clocks) == len(times)
        assert sum(c.stats["taken"] for c in clocks) == len(times)
        fired = await fires(a, "race")
        assert sorted(e.scheduled_for for e in fired) == times
    finally:
        await a.close()
        await b.close()


async def test_two_clock_processes_race_for_each_fire_and_fire_it_once(make_settings, policy_file, own_redis):
    settings = make_settings(redis_url=own_redis.url,
                             policy_file=policy_file(schedule_toml("every-second", "* * * * * *", "/help")))
    rt = await Runtime.start(settings, make_wiring())
    procs = await start_together(rt, lambda: [spawn_bot(settings, "clock") for _ in range(2)])
    try:
        async def enough():
            return len({e.scheduled_for for e in await fires(rt, "every-second")}) >= 5
        await wait_for(enough, timeout=30, what="five fire times")
    finally:
        for proc in procs:
            proc.terminate()
        logs = [proc.output() for proc in procs]
    fired = await fires(rt, "every-second")
    await rt.close()
    assert all("clock started: every-second" in log for log in logs), logs
    assert len(fired) == len({e.scheduled_for for e in fired}), "a fire time fired twice"
    assert all(e.type == "schedule_fired" and e.scheduled_for == int(e.scheduled_for) for e in fired)
    seen = [attempts(log, "every-second") for log in logs]
    assert sum(len(won) for won, _ in seen) == len(fired)
    # while both ran (until the first was stopped), each competed for every fire: won it or found it taken
    end = min(max([*won, *(t for t, _ in lost)]) for won, lost in seen)
    contested = [e for e in fired if e.scheduled_for <= end]
    assert len(contested) >= 3, (logs, end)
    for won, lost in seen:
        tried = sum(t <= end for t in won) + sum(n for t, n in lost if t <= end)
        assert tried >= len(contested), (won, lost, [e.scheduled_for for e in contested])
    # each contested fire was won once and lost by the other: which process wins is a matter of
    # scheduling, and one may well win them all
    losses = sum(n for _, lost in seen for t, n in lost if t <= end)
    assert losses >= len(contested), "the processes did not compete for every fire"


# ---- misses while no process ran ----------------------------------------------------------------

async def _run_clock_until_baseline(rt: Runtime, name: str) -> None:
    """Run a clock in this process until it has recorded its baseline, then stop it: 'the process
    that ran before the outage'."""
    task = asyncio.create_task(Clock(rt).run())
    await wait_for(lambda: rt.redis.zscore(schedule_keys.last(rt.store.keys), name), what="the clock's baseline")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _baseline_then_fire_time(rt: Runtime, policy_file, name: str, message: str) -> float:
    """The clock that ran before the outage records its baseline (its policy fires `name` at a
    time far from now); then the policy is rewritten to fire one second ahead, with no clock up.
    The fire time is chosen after the baseline, so a slow start cannot make it land too early."""
    await _run_clock_until_baseline(rt, name)
    baseline = float(await rt.redis.zscore(schedule_keys.last(rt.store.keys), name))
    fire_at = math.ceil(max(time.time(), baseline)) + 1
    policy_file(schedule_toml(name, cron_at(fire_at), message))
    return fire_at


def far_from_now() -> str:
    return cron_at(time.time() + 12 * 3600)


async def _sleep_past(ts: float) -> None:
    while time.time() <= ts:
        await asyncio.sleep(0.05)


async def test_fire_missed_while_down_happens_once_on_start_within_the_grace(
        make_settings, policy_file, start_bot, own_redis):
    settings = make_settings(redis_url=own_redis.url, policy_file=policy_file(
        schedule_toml("nightly", far_from_now(), "/service_status api prod")))
    rt = await Runtime.start(settings, make_wiring())  # no worker yet: nothing but the clocks may write at the barrier
    fire_at = await _baseline_then_fire_time(rt, policy_file, "nightly", "/service_status api prod")
    await _sleep_past(fire_at + 0.5)
    assert await fires(rt, "nightly") == []  # nothing ran the schedule at its time

    # both start after it, together: both see the fire as due and race for it
    clocks = await start_together(rt, lambda: [spawn_bot(settings, "clock"), spawn_bot(settings, "clock")])
    try:
        worker = await start_bot(settings)
        thread_id = fire_thread_id("nightly", fire_at)
        await wait_for(lambda: worker.store.exists(thread_id), timeout=60, what="the late fire")
        thread = await settled(worker, thread_id)
        await wait_for(lambda: rt.redis.zscore(schedule_keys.last(rt.store.keys), "nightly"), what="bookkeeping")
    finally:
        for proc in clocks:
            proc.terminate()
        logs = [proc.output() for proc in clocks]
    [fired] = await fires(rt, "nightly")
    assert fired.type == "schedule_fired" and fired.scheduled_for == fire_at and fired.missed == 0
    assert thread.events[-1].type == "agent_reply" and "api in prod: healthy" in thread.events[-1].text
    assert await rt.redis.zscore(schedule_keys.last(rt.store.keys), "nightly") == fire_at
    # one won, the other lost the claim on the same fire
    assert sorted(attempts(log, "nightly") for log in logs) == [([], [(fire_at, 1)]), ([fire_at], [])], logs
    await rt.close()


async def test_fire_missed_outside_the_grace_is_recorded_as_missed_not_run(
        make_settings, policy_file, start_bot):
    settings = make_settings(policy_file=policy_file(
        schedule_toml("nightly", far_from_now(), "/service_status api prod")))
    rt = await start_bot(settings)
    fire_at = await _baseline_then_fire_time(rt, policy_file, "nightly", "/service_status api prod")
    await _sleep_past(fire_at + 1.5)

    clock = spawn_bot(settings, "clock", CHATOPS_SCHEDULE_GRACE="1")
    try:
        thread_id = fire_thread_id("nightly", fire_at)
        await wait_for(lambda: rt.store.exists(thread_id), timeout=60, what="the missed record")
        thread = await settled(rt, thread_id)
    finally:
        clock.terminate()
        log = clock.output()
    [missed] = await fires(rt, "nightly")
    assert missed.type == "schedule_missed" and missed.scheduled_for == fire_at
    assert missed.missed == 1 and missed.grace == 1
    assert thread.state == "idle" and not thread.calls and runbook_ran(settings) == []  # not run
    assert "missed while no process ran" in log


async def test_older_misses_coalesce_into_one_run(make_settings, policy_file, start_bot):
    settings = make_settings(policy_file=policy_file(schedule_toml("often", "* * * * * *", "/help")))
    rt = await start_bot(settings)
    schedule = rt.policy.schedule("often")
    now = time.time()
    await rt.redis.zadd(schedule_keys.last(rt.store.keys), {"often": math.floor(now) - 30})  # down for 30 s
    appended = await Clock(rt, clock=lambda: now).catch_up(schedule)
    assert appended.ok
    [fired] = await fires(rt, "often")
    assert fired.type == "schedule_fired" and fired.scheduled_for == math.floor(now)
    assert fired.missed == 29  # 30 fire times in (last, now], one run


async def test_missed_leaves_out_fire_times_another_process_already_handled(
        make_settings, policy_file, start_bot):
    settings = make_settings(policy_file=policy_file(
        schedule_toml("often", "* * * * * *", "/help") + schedule_toml("sparse", "*/30 * * * * *", "/help",
                                                                     extra="grace = 10")))
    rt = await start_bot(settings)
    schedule = rt.policy.schedule("often")
    now = time.time()
    down = math.floor(now) - 30
    await rt.redis.zadd(schedule_keys.last(rt.store.keys), {"often": down})  # as this clock read it
    # meanwhile another process fired a later time, coalescing the ones before it (its missed = 19),
    # and has not yet moved the bookkeeping
    assert (await Clock(rt).fire(schedule, down + 20, missed=19)).ok
    appended = await Clock(rt, clock=lambda: now).catch_up(schedule)
    assert appended.ok
    fired = {e.scheduled_for: e for e in await fires(rt, "often")}
    assert sorted(fired) == [down + 20, math.floor(now)]
    assert fired[math.floor(now)].missed == 9  # only down+21 .. now-1: nobody handled those
    assert fired[down + 20].missed + fired[math.floor(now)].missed + 2 == 30  # each of the 30, once

    # outside the grace (10 s), the missed record counts the same way
    sparse = rt.policy.schedule("sparse")
    base = 30 * math.floor(now / 30) - 300
    await rt.redis.zadd(schedule_keys.last(rt.store.keys), {"sparse": base})
    assert (await Clock(rt).record_missed(sparse, base + 60, 2, 10)).ok  # another process, meanwhile
    assert (await Clock(rt, clock=lambda: base + 165).catch_up(sparse)).ok
    records = {e.scheduled_for: e.missed for e in await fires(rt, "sparse")}
    assert records == {base + 60: 2, base + 150: 3}  # base+90, +120 and +150: not +30 and +60 again


async def test_a_fire_given_up_on_while_redis_is_down_is_recorded_once_it_is_back(
        make_settings, policy_file, own_redis, caplog):
    fire_at = math.ceil(time.time()) + 5  # time to start a clock and stop Redis, even when loaded
    settings = make_settings(redis_url=own_redis.url, policy_file=policy_file(
        schedule_toml("nightly", cron_at(fire_at), "/service_status api prod", extra="grace = 1")))
    rt = await Runtime.start(settings, make_wiring())
    clock = Clock(rt)
    task = asyncio.create_task(clock.run())
    caplog.set_level(logging.INFO, logger="chatops.schedule")
    try:
        await wait_for(lambda: rt.redis.zscore(schedule_keys.last(rt.store.keys), "nightly"), what="the baseline")
        await rt.redis.save()  # the restarted server loads this snapshot: the baseline survives
        own_redis.stop()
        assert time.time() < fire_at, "Redis must be down before the fire time"

        async def gave_up():
            return any("retrying in the background" in r.getMessage() for r in caplog.records)
        await wait_for(gave_up, timeout=60, what="the clock to give up past the grace")
        assert clock.stats["missed"] == 0 and not task.done()
        own_redis.start()
        thread_id = fire_thread_id("nightly", fire_at)
        await wait_for(lambda: rt.store.exists(thread_id), timeout=60, what="the miss to be recorded")
        [missed] = await fires(rt, "nightly")
        assert missed.type == "schedule_missed" and missed.scheduled_for == fire_at and missed.missed == 1
        await wait_for(lambda: _done(clock.recovering["nightly"]), what="the background retry to end")
        assert clock.stats["missed"] == 1
        assert await rt.redis.zscore(schedule_keys.last(rt.store.keys), "nightly") == fire_at
        assert any("Redis is back; caught up" in r.getMessage() for r in caplog.records)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rt.close()


# ---- the CLI ------------------------------------------------------------------------------------

async def test_schedules_cli_lists_and_runs(make_settings, policy_file):
    settings = make_settings(policy_file=policy_file(schedule_toml("status", "30 8 * * 1-5", "/help")))
    env = bot_env(settings)
    listed = subprocess.run([sys.executable, "-m", "bot", "schedules", "list", "--json"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    nxt = datetime.fromtimestamp(row["next"], timezone.utc)
    assert row["name"] == "status" and (nxt.hour, nxt.minute) == (8, 30) and nxt.weekday() < 5
    ran = subprocess.run([sys.executable, "-m", "bot", "schedules", "run", "status", "--as", "carol"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    thread_id = ran.stdout.split("thread ")[1].strip()
    rt = await Runtime.start(settings, make_wiring())
    try:
        thread = await rt.store.load(thread_id)
        [event] = thread.events
        assert event.type == "schedule_fired" and event.source.user == "carol" and event.text == "/help"
        assert thread.meta.origin.address == {"schedule": "status", "scheduled_for": event.scheduled_for,
                                              "to": {"slack": ["C-OPS"], "email": ["ops@example.com"]}}
    finally:
        await rt.close()
    unknown = subprocess.run([sys.executable, "-m", "bot", "schedules", "run", "nope"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 1 and "no schedule named 'nope'" in unknown.stderr


def test_a_schedules_destinations_are_channel_neutral():
    from bot.policy import Schedule

    s = Schedule(name="n", cron="0 9 * * *", agent="deploy", message="m",
                 to={"webhook": ["hook-1", "hook-1"], "slack": ["C-OPS"], "email": []})
    assert s.to == {"webhook": ["hook-1"], "slack": ["C-OPS"]}
    assert s.where() == "webhook hook-1, slack C-OPS"


@pytest.mark.parametrize("keys, said", [
    ('slack_channel = "C-OPS"', """'slack_channel' is gone: write to = { slack = ["C-OPS"] }"""),
    ('emails = ["ops@example.com"]\nto = { webhook = ["h"] }',
     """'emails' is gone: write to = { webhook = ["h"], email = ["ops@example.com"] }"""),
    ('slack_channel = "C-OPS"\nemails = ["ops@example.com"]',
     """'slack_channel' and 'emails' are gone: write to = { slack = ["C-OPS"], email = ["ops@example.com"] }"""),
])
def test_the_older_schedule_keys_are_refused_with_the_to_to_write(policy_file, keys, said):
    path = policy_file(f'[[schedules]]\nname = "nightly"\ncron = "0 3 * * *"\nagent = "deploy"\n'
                       f'message = "hi"\n{keys}\n')
    with pytest.raises(ConfigError) as refused:
        load_policy(path)
    assert str(refused.value) == f"policy: schedules.nightly: {said}"


async def test_a_reload_into_the_older_schedule_keys_is_refused(make_settings, policy_file, caplog):
    path = policy_file(schedule_toml("nightly", "0 3 * * *", "hi"))
    rt = await Runtime.start(make_settings(policy_file=path), make_wiring())
    try:
        path.write_text(path.read_text().replace('to = { slack = ["C-OPS"], email = ["ops@example.com"] }',
                                                  'slack_channel = "C-OPS"'))
        assert rt.reload() is False
        assert rt.policy.schedules[0].to == {"slack": ["C-OPS"], "email": ["ops@example.com"]}
        assert """policy: schedules.nightly: 'slack_channel' is gone: write to = { slack = ["C-OPS"] }""" \
            in caplog.text
    finally:
        await rt.close()


def test_an_origin_stored_with_the_older_keys_reads_as_its_to():
    from channels.schedule import ScheduleChannel, ScheduledThread

    older = {"schedule": "nightly", "scheduled_for": 1700000000.0, "slack_channel": "C-OPS",
             "emails": ["ops@example.com"], "to": {}}
    read = ScheduleChannel().address(older)
    assert isinstance(read, ScheduledThread)
    assert read.to == {"slack": ["C-OPS"], "email": ["ops@example.com"]}
    assert ScheduledThread.model_validate({**older, "emails": []}).to == {"slack": ["C-OPS"]}
    assert "slack_channel" not in read.model_dump() and "emails" not in read.model_dump()
    # what is written now holds the schedule, its time and `to` only
    from bot.policy import Schedule
    from channels.schedule import origin_for

    s = Schedule(name="n", cron="0 9 * * *", agent="deploy", message="m", to={"slack": ["C-OPS"]})
    assert origin_for(s, 1.0).address == {"schedule": "n", "scheduled_for": 1.0, "to": {"slack": ["C-OPS"]}}
