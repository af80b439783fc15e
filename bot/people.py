"""People: who owns which identities (Slack user ids, email addresses, console/API names).

Every rule that compares who (approvers, requester, two-person, quorum, an agent's users,
escalation) compares people, never identity strings: one person, one vote, whichever channel
they use. An identity that no person lists is a person of its own. A person's name is also
their console/API name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

ANYONE = "*"
GROUP = "group:"


def norm(identity: str) -> str:
    return identity.strip().lower()


class People:
    def __init__(self, people: Mapping[str, list[str]], groups: Mapping[str, list[str]]) -> None:
        self.names = {norm(name) for name in people}
        self.owner: dict[str, str] = {}  # identity -> person name
        for name, identities in people.items():
            for identity in [name, *identities]:
                self.owner[norm(identity)] = norm(name)
        self.groups = {name: list(members) for name, members in groups.items()}

    def person(self, identity: str | None) -> str | None:
        """The person an identity belongs to (the identity itself when no person lists it)."""
        if not identity or not identity.strip():
            return None
        key = norm(identity)
        return self.owner.get(key, key)

    def person_of_any(self, identities: Iterable[str | None]) -> str | None:
        """The person of the first identity a person lists (e.g. a Slack id, then the email of its
        Slack profile), else the first identity as a person of its own."""
        given = [i for i in identities if i and i.strip()]
        for identity in given:
            if norm(identity) in self.owner:
                return self.owner[norm(identity)]
        return self.person(given[0]) if given else None

    def is_known(self, identity: str) -> bool:
        return norm(identity) in self.owner

    def identities(self, person: str) -> list[str]:
        """Every identity of a person (for contacting them): its name too."""
        found = [i for i, owner in self.owner.items() if owner == person]
        return found or [person]

    def expand(self, entries: Iterable[str]) -> set[str] | None:
        """Entries (person names, raw identities, `group:name`, `*`) as a set of people; None
        for `*` (anyone)."""
        out: set[str] = set()
        for entry in entries:
            if entry == ANYONE:
                return None
            members = self.groups.get(entry[len(GROUP):], []) if entry.startswith(GROUP) else [entry]
            out |= {p for p in (self.person(m) for m in members) if p}
        return out

    def contacts(self, entries: Iterable[str]) -> list[str]:
        """Every identity of the people `entries` name: where they can be reached."""
        people = self.expand(entries) or set()
        return sorted({i for person in people for i in self.identities(person)})

    def label(self, entries: Iterable[str]) -> list[str]:
        """How to name `entries` to anyone: groups and people by name, never an address of
        someone no person lists (it is shown as its domain)."""
        out = []
        for entry in entries:
            if entry == ANYONE:
                return ["anyone"]
            if entry.startswith(GROUP):
                out.append(entry[len(GROUP):])
            elif norm(entry) in self.owner:
                out.append(self.owner[norm(entry)])
            elif "@" in entry:
                out.append(f"an approver at {entry.rpartition('@')[2].lower()}")
            else:
                out.append(entry)
        return list(dict.fromkeys(out))
