"""Each channel names its Redis keys itself (bot/keys.py names only the core's), and a key that
moved there keeps the name it was stored under: data written before still reads."""

from __future__ import annotations

from bot.keys import Keys
from channels import schedule_keys
from channels.slack import keys as slack_keys


def test_keys_moved_to_their_channel_keep_their_stored_names():
    keys = Keys("chatops:")
    assert slack_keys.posted(keys, "C0DEPLOY", "1700000000.000100") == \
        "chatops:address:slack:C0DEPLOY:1700000000.000100"
    assert slack_keys.email(keys, "U0BOB001") == "chatops:slack:email:U0BOB001"
    assert schedule_keys.last(keys) == "chatops:schedules:last"


def test_the_core_names_no_channel_key():
    assert not any(hasattr(Keys, name) for name in ("address", "schedule_last"))
