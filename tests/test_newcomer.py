"""What a newcomer reads is true: the README's transcript is what the console prints, the example
files pass `chatops doctor`, `.env.example` has every documented variable, every CLI verb
describes its arguments, the example runbooks say they are examples."""

from __future__ import annotations

import argparse
import re
import subprocess

import pytest

from bot.cli import build_parser
from tests.conftest import ROOT, make_wiring
from tests.test_cli import chatops
from tests.test_console import ConsoleProcess

README = (ROOT / "README.md").read_text()
_ID = re.compile(r"[0-9a-f]{16}\.[0-9a-f]{8}")
_DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


def _blocks(language: str = "") -> list[str]:
    """The README's fenced blocks in `language` ("" for none), indented ones included."""
    blocks, current, lang = [], None, ""
    for line in README.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            if current is None:
                current, lang = [], fence[3:]
            else:
                if lang == language:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line + "\n")
    return blocks


def _normal(line: str) -> str:
    return _DATE.sub("DATE", _ID.sub("ID", line))


async def test_the_readme_transcript_is_what_the_console_prints(make_settings, start_bot):
    [transcript] = [b for b in _blocks() if b.startswith("you> ")]
    lines = transcript.rstrip("\n").splitlines()
    settings = make_settings()
    await start_bot(settings)
    console = await ConsoleProcess.start(settings, "alice")
    approval_id = None
    try:
        for line in lines:
            if line.startswith("you> "):
                typed = line[len("you> "):]
                if approval_id:
                    typed = _ID.sub(approval_id, typed)
                await console.type(typed)
                continue
            printed = await _next_line(console)
            approval_id = approval_id or (m.group(0) if (m := _ID.search(printed)) else None)
            assert _normal(printed) == _normal(line)
        rest = await console.close()
        assert rest.strip() == "", rest
    finally:
        console.kill()


async def _next_line(console: ConsoleProcess) -> str:
    return (await console.until(r"^.*$")).group(0)


def test_env_example_has_every_variable_of_the_readmes_tables():
    documented = set()
    for line in README.splitlines():
        if line.startswith("| `"):
            documented |= set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", line.split("|")[1]))
    for block in _blocks("sh"):
        documented |= set(re.findall(r"^([A-Z][A-Z0-9_]{2,})=", block, re.MULTILINE))
    assert {"REDIS_URL", "SLACK_BOT_TOKEN", "SMTP_URL", "CHATOPS_EMAIL_RATE_LIMIT"} <= documented
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^# ?([A-Z][A-Z0-9_]{2,})=", example, re.MULTILINE))
    assert sorted(documented - listed) == []


def test_every_listed_variable_is_read_by_the_core_or_its_channel():
    """Wherever a setting lives (the core's `Settings`, a channel's own model), the names the
    README and .env.example document are the ones read, and every setting is listed."""
    from pydantic import AliasChoices

    from bot.settings import Settings
    from channels.email.settings import EmailSettings
    from channels.slack.settings import SlackSettings

    read: dict[str, str] = {}
    for model in (Settings, SlackSettings, EmailSettings):
        for field in model.model_fields.values():
            assert isinstance(field.validation_alias, AliasChoices)
            read |= {str(name): model.__name__ for name in field.validation_alias.choices}
    assert read["SLACK_BOT_TOKEN"] == "SlackSettings" and read["SMTP_URL"] == "EmailSettings"
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^# ?([A-Z][A-Z0-9_]{2,})=", example, re.MULTILINE))
    assert sorted(listed - set(read)) == ["CHATOPS_PROMPTS_DIR"]  # bot/prompts.py: the environment only
    assert sorted(set(read) - listed) == []


async def test_the_example_policy_passes_the_doctor(make_settings):
    out = await chatops(make_settings(), "doctor", CHATOPS_POLICY=str(ROOT / "chatops.example.toml"),
                        PORT="0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "error:" not in out.stdout
    assert "policy: " + str(ROOT / "chatops.example.toml") in out.stdout


def _verbs(parser: argparse.ArgumentParser, path: str = "chatops"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _verbs(sub, f"{path} {name}")
    yield path, parser


@pytest.mark.parametrize("path,parser", list(_verbs(build_parser(make_wiring()))), ids=lambda v: str(v)[:40])
def test_every_verb_describes_itself_and_its_arguments(path, parser):
    assert parser.description, f"{path} has no description"
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"{path}: {action.dest} has no help"


async def test_threads_list_has_a_header_row(make_settings, start_bot):
    settings = make_settings()
    await start_bot(settings)
    empty = await chatops(settings, "threads", "list")
    assert empty.stdout == "no threads\n"
    console = await ConsoleProcess.start(settings, "bob")
    await console.type("/service_status api dev")
    await console.until("healthy")
    await console.close()
    listed = (await chatops(settings, "threads", "list")).stdout.splitlines()
    assert re.match(r"^ID\s+STATE\s+AGENT\s+CHANNEL\s+UPDATED$", listed[0])
    assert re.match(r"^[0-9a-f]{16}\s+idle\s+deploy\s+console\s+\d{4}-", listed[1])


@pytest.mark.parametrize("runbook,args", [("deploy.sh", ["api", "1.2.3", "prod"]),
                                          ("rollback.sh", ["api", "prod"]),
                                          ("service_status.sh", ["api", "prod"])])
def test_the_example_runbooks_say_they_are_examples(runbook, args, tmp_path):
    done = subprocess.run([str(ROOT / "runbooks" / runbook), *args], capture_output=True, text=True,
                          env={"CHATOPS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=30)
    assert done.returncode == 0 and "(example runbook: nothing was" in done.stdout
