"""CLI verbs that only read or append to Redis must not import the servers, Slack or the model
SDK (seconds of start-up on a small machine). Not a timing test: what is imported is checked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, bot_env

HEAVY = ("uvicorn", "fastapi", "starlette", "slack_bolt", "slack_sdk", "anthropic", "aiohttp",
         "aiosmtpd", "httpx")

PROBE = """
import json, sys
from bot.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("LOADED " + json.dumps(sorted(m for m in %r if m in sys.modules)))
""" % (HEAVY,)


@pytest.mark.parametrize("argv", [
    ["threads", "list"],
    ["threads", "show", "0123456789abcdef"],
    ["approve", "0123456789abcdef.01234567", "--as", "alice"],
    ["reject", "0123456789abcdef.01234567", "--reason", "no", "--as", "alice"],
    ["schedules", "list"],
    ["doctor"],  # with no model or Slack configured: it imports their SDKs only to check them
])
async def test_read_only_verbs_import_no_server_slack_or_model_sdk(make_settings, argv):
    settings = make_settings()
    # a model configured as in production: the verbs must not need it to read Redis
    key = "" if argv == ["doctor"] else "k"
    env = bot_env(settings, ANTHROPIC_API_KEY=key, PORT="0")
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", PROBE, *argv], env=env,
                                   cwd=ROOT, capture_output=True, text=True, timeout=120)
    line = next((x for x in done.stdout.splitlines() if x.startswith("LOADED ")), None)
    assert line is not None, done.stdout + done.stderr
    assert json.loads(line[len("LOADED "):]) == [], done.stdout + done.stderr
    assert "Traceback" not in done.stderr
