"""Every Redis key name of the core (a channel keeps its own under `<prefix><channel>:`, e.g.
channels/slack/keys.py).

All keys of one thread share the hash tag `{<thread id>}` so that they live in one Redis Cluster
slot and one Lua script can touch them atomically.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "chatops:"
    inbox_shards: int = 1  # CHATOPS_INBOX_SHARDS

    # one thread
    def log(self, thread_id: str) -> str:
        return f"{self.prefix}thread:{{{thread_id}}}:log"

    def meta(self, thread_id: str) -> str:
        return f"{self.prefix}thread:{{{thread_id}}}:meta"

    def lease(self, thread_id: str) -> str:
        return f"{self.prefix}thread:{{{thread_id}}}:lease"

    def claim(self, thread_id: str, name: str) -> str:
        return f"{self.prefix}thread:{{{thread_id}}}:claim:{name}"

    def approval_events(self, thread_id: str, approval_id: str) -> str:
        """List: the log positions of the events about one approval (a read index, see store.py)."""
        return f"{self.prefix}thread:{{{thread_id}}}:approval:{approval_id}"

    def usage(self, thread_id: str) -> str:
        """List: one JSON record per model call of the thread (tokens, cached share), newest last."""
        return f"{self.prefix}thread:{{{thread_id}}}:usage"

    def open_approvals(self, thread_id: str) -> str:
        """Set: the thread's approvals requested and not decided yet (a read index)."""
        return f"{self.prefix}thread:{{{thread_id}}}:approvals:open"

    def acked(self, thread_id: str) -> str:
        """A write in the thread's slot that WAIT then waits for (see Store.replicated)."""
        return f"{self.prefix}thread:{{{thread_id}}}:acked"

    # global indexes (derived from the logs; rebuilt by replaying them if ever lost)
    @property
    def threads(self) -> str:
        return f"{self.prefix}threads"

    def threads_in(self, state: str) -> str:
        """Sorted set: the threads last seen in `state` -> when (an index of the meta's state)."""
        return f"{self.prefix}threads:{state}"

    @property
    def pending_approvals(self) -> str:
        return f"{self.prefix}approvals:pending"

    # streams
    @property
    def inbox(self) -> str:
        """The first inbox shard (the only one by default)."""
        return f"{self.prefix}inbox"

    def inbox_of(self, thread_id: str) -> str:
        """The inbox shard of a thread: always the same one, so its wake-ups stay in order."""
        return self.inboxes()[zlib.crc32(thread_id.encode()) % self.inbox_shards]

    def inboxes(self) -> list[str]:
        """Every inbox shard (shard 0 keeps the unsharded name: going from 1 to N shards keeps
        what is pending; going down from N orphans the entries of the shards dropped)."""
        return [self.inbox] + [f"{self.prefix}inbox:{i}" for i in range(1, self.inbox_shards)]

    @property
    def outbox(self) -> str:
        return f"{self.prefix}outbox"

    # misc
    def once(self, name: str) -> str:
        """A claim outside any thread (schedule fires, rate limits)."""
        return f"{self.prefix}once:{name}"

    # ---- new threads per requester and hour (issue 10's throttle)
    def requests(self, requester: str, window: int) -> str:
        """Set: the threads a requester started in an hour window."""
        return f"{self.prefix}requests:{requester}:{window}"

    def requests_told(self, requester: str, window: int) -> str:
        """Set once the requester was told they are over the limit in that hour."""
        return f"{self.prefix}requests:told:{requester}:{window}"

    # ---- approval timers
    @property
    def approval_timers(self) -> str:
        """Sorted set: `remind:<approval id>` / `escalate:<approval id>` -> when it is due."""
        return f"{self.prefix}approvals:timers"
