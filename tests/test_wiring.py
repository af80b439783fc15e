"""The composition root: the core imports no channel and no agent, channels say how they reach
people and parse destinations themselves, and the schedules' check names what no channel takes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot.channel import addresses_of
from bot.doctor import Context
from bot.policy import ConfigError, Policy
from bot.wiring import Wiring
from channels.console import ConsoleChannel
from channels.email.channel import EmailChannel, Mailbox
from channels.schedule_doctor import check as schedules_check
from channels.slack.channel import SlackChannel, SlackPlace, SlackUser
from tests.conftest import ROOT, make_wiring


def test_the_core_imports_no_channel_and_no_agent():
    modules = [p.stem for p in (ROOT / "bot").glob("*.py") if p.stem not in ("__main__", "__init__")]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('bot.' + name)\n"
        "leaked = sorted(m for m in sys.modules if m.split('.')[0] in ('channels', 'agents'))\n"
        "print(' '.join(leaked))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


def test_each_channel_claims_its_own_kind_of_person():
    email, slack = EmailChannel(), SlackChannel()
    people = ["alice@example.com", "u0bob0001", "carol", "walter", "Dave@Example.COM"]
    assert addresses_of(email, people) == [Mailbox(address="alice@example.com"),
                                           Mailbox(address="dave@example.com")]
    assert addresses_of(slack, people) == [SlackUser(user="U0BOB0001")]
    assert email.contact("not an address@") is None


def test_channels_parse_their_destinations():
    assert SlackChannel().target("C0123") == SlackPlace(channel="C0123")
    assert EmailChannel().target("Ops@Example.com") == Mailbox(address="ops@example.com")
    for channel, bad in ((SlackChannel(), "ops team"), (EmailChannel(), "ops")):
        try:
            channel.target(bad)
        except ValueError:
            continue
        raise AssertionError(f"{channel.name} took {bad!r}")


async def test_a_schedule_to_no_channel_or_an_unparsable_target_is_an_error(make_settings):
    policy = Policy.model_validate({"schedules": [
        {"name": "n", "cron": "0 9 * * *", "agent": "deploy", "message": "m",
         "to": {"teams": ["ops"], "email": ["not-an-address"]}},
    ]})
    wiring = make_wiring()
    found = await schedules_check(Context(make_settings(), policy, wiring.load_agents(policy), wiring.channels))
    errors = [f.message for f in found if f.level == "error"]
    assert "schedule n: results go to teams ops, but this bot has no channel named 'teams'" in errors
    assert any(e.startswith("schedule n: email cannot send to 'not-an-address'") for e in errors)



def test_a_channel_name_is_taken_once_and_never_one_the_core_uses():
    def named(name: str) -> ConsoleChannel:
        channel = ConsoleChannel()
        channel.name = name
        return channel

    for channels, why in (([SlackChannel(), SlackChannel()], "channel 'slack' is wired twice"),
                          ([named("api")], "channel 'api': the core uses that name itself"),
                          ([ConsoleChannel(), named("cli")], "channel 'cli': the core uses")):
        with pytest.raises(ConfigError, match=why):
            Wiring(channels=channels, agents=[])
    wiring = Wiring(channels=[SlackChannel(), named("teams")], agents=[])
    assert wiring.channel("teams") is not None
