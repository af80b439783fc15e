"""Intake: how every channel hands a human's words to the bot.

One call creates the thread if needed, drops a delivery seen before (by its external id, with an
expiry), appends the event and wakes a worker, in one round trip to Redis. A channel acknowledges
its source only after this returns; if Redis is down it raises and the channel refuses.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from bot.events import HumanResponse, Source, UserMessage
from bot.store import Appended, Claim, Store
from bot.thread import Origin, ThreadMeta

DEDUPE_TTL = 3 * 3600.0  # longer than Slack's retry window (about 6 minutes) and mail retries


def new_thread_id() -> str:
    return secrets.token_hex(8)


def thread_id_for(channel: str, address: str) -> str:
    """A stable thread id for a conversation address (e.g. a Slack thread): no lookup needed."""
    return hashlib.sha256(f"{channel}\0{address}".encode()).hexdigest()[:16]


class Intake:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def message(
        self,
        thread_id: str,
        *,
        agent: str,
        origin: Origin,
        text: str,
        source: Source,
        dedupe_ttl: float = DEDUPE_TTL,
    ) -> Appended:
        """Append what a human said: a `human_response` if the thread is waiting for one, else a
        `user_message` (one round trip: the append script looks at the thread's state)."""
        event = UserMessage(text=text, source=source)
        answer = HumanResponse(id=event.id, ts=event.ts, text=text, source=source)
        meta = ThreadMeta(id=thread_id, agent=agent, origin=origin, created=time.time())
        claim = Claim(f"ext:{source.external_id}", dedupe_ttl) if source.external_id else None
        appended = await self.store.append(
            thread_id, event, create=meta, claim=claim, state="working", wake=True, answer=answer
        )
        await self.store.confirm(thread_id)  # with replicas required: acknowledged means replicated
        return appended
