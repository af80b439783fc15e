"""Intake: how every channel hands a human's words to the bot.

One call creates the thread if needed, drops a delivery seen before (by its external id, with an
expiry), appends the event and wakes a worker, in one round trip to Redis. A channel acknowledges
its source only after this returns; if Redis is down it raises and the channel refuses.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from bot.events import HumanResponse, Source, UserMessage
from bot.store import Appended, Claim, Store
from bot.thread import Origin, ThreadMeta

DEDUPE_TTL = 3 * 3600.0  # longer than Slack's retry window (about 6 minutes) and mail retries
MAX_TEXT = 40_000  # characters of one message kept; the rest is cut, with a note
MAX_NAME = 200  # a user name or delivery id
# what cannot be stored or encoded (lone surrogates) or shown (NUL and other C0 controls but tab,
# newline and carriage return; DEL)
_POISON = re.compile(r"[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def poison(text: str) -> str | None:
    """What makes `text` unacceptable as it is (for the channels that refuse rather than clean)."""
    match = _POISON.search(text)
    if match is None:
        return None
    char = match.group()
    if "\ud800" <= char <= "\udfff":
        return "contains a lone UTF-16 surrogate (not valid Unicode)"
    return f"contains the control character U+{ord(char):04X}"


def clean(text: str, limit: int = MAX_TEXT) -> str:
    """`text` made safe to store, encode and show: surrogates replaced by U+FFFD, control
    characters dropped, cut to `limit` characters."""
    text = _POISON.sub(lambda m: "\ufffd" if m.group() >= "\ud800" else "", text)
    if len(text) > limit:
        text = text[:limit] + f"\n[… {len(text) - limit} characters cut]"
    return text


def clean_source(source: Source) -> Source:
    return source.model_copy(update=dict(
        channel=clean(source.channel, MAX_NAME),
        user=clean(source.user, MAX_NAME) if source.user is not None else None,
        external_id=clean(source.external_id, 4 * MAX_NAME) if source.external_id is not None else None,
        also=tuple(clean(identity, MAX_NAME) for identity in source.also),
    ))


def new_thread_id() -> str:
    return secrets.token_hex(8)


def thread_id_for(channel: str, address: str) -> str:
    """A stable thread id for a conversation address (e.g. a Slack thread): no lookup needed."""
    return hashlib.sha256(f"{channel}\0{address}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Admission:
    """Whether a requester may start a thread now, and whether to tell them they may not (once
    an hour: a refusal per request would be a flood of its own)."""

    ok: bool
    tell: bool = False

    def refusal(self, limit: int) -> str:
        return f"Too many new requests from you: at most {limit} an hour. Try again later."


class Intake:
    def __init__(self, store: Store, requests_per_hour: int = 20) -> None:
        self.store = store
        self.requests_per_hour = requests_per_hour

    async def admit(self, requester: str | None, thread_id: str) -> Admission:
        """Count a new thread against its requester's hourly limit. New threads are what a
        stranger can multiply (each may mail every approver), so they are throttled per
        requester; the approvers' mail about approvals is then never capped. The same thread
        (a redelivery) counts once."""
        if not requester:
            return Admission(True)
        who, window = requester.strip().lower(), int(time.time() // 3600)
        redis, keys = self.store.redis, self.store.keys
        key = keys.requests(who, window)
        pipe = redis.pipeline(transaction=False)
        pipe.sismember(key, thread_id)
        pipe.scard(key)
        known, count = await pipe.execute()
        if known:
            return Admission(True)
        if count >= self.requests_per_hour:
            told = await redis.set(keys.requests_told(who, window), 1, nx=True, ex=7200)
            return Admission(False, bool(told))
        pipe = redis.pipeline(transaction=False)
        pipe.sadd(key, thread_id)
        pipe.expire(key, 7200)
        await pipe.execute()
        return Admission(True)

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
        `user_message` (one round trip: the append script looks at the thread's state). Every
        channel's text passes here, so this is where poison (surrogates, NUL, huge text) is
        cleaned: nothing stored can fail to encode later."""
        text, source = clean(text), clean_source(source)
        event = UserMessage(text=text, source=source)
        answer = HumanResponse(id=event.id, ts=event.ts, text=text, source=source)
        meta = ThreadMeta(id=thread_id, agent=agent, origin=origin, created=time.time())
        claim = Claim(f"ext:{source.external_id}", dedupe_ttl) if source.external_id else None
        appended = await self.store.append(
            thread_id, event, create=meta, claim=claim, state="working", wake=True, answer=answer
        )
        await self.store.confirm(thread_id)  # with replicas required: acknowledged means replicated
        return appended
