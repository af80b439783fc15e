"""Which agent a message is for: the first word if it names an agent, else the default."""

from __future__ import annotations

from collections.abc import Collection


def route(text: str, agents: Collection[str], default: str) -> tuple[str, str]:
    """(agent, text). The text is kept whole: "deploy api to prod" is also the request."""
    first, _, rest = text.strip().partition(" ")
    name = first.lower().rstrip(":,")
    if name in agents and rest.strip():
        return name, text.strip()
    return default, text.strip()
