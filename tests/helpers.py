"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

from bot.events import Source
from bot.intake import new_thread_id
from bot.runtime import Runtime
from bot.settings import Settings
from bot.thread import Origin


async def say(rt: Runtime, text: str, user: str = "bob", thread_id: str | None = None,
              channel: str = "api", agent: str = "deploy") -> str:
    thread_id = thread_id or new_thread_id()
    await rt.intake.message(thread_id, agent=agent, origin=Origin(channel=channel), text=text,
                            source=Source(channel=channel, user=user))
    return thread_id


def runbook_lines(settings: Settings) -> list[str]:
    log = settings.data_dir / "runbook.log"
    return log.read_text().splitlines() if log.exists() else []
