"""The policy file (TOML): who may approve what, runbook commands, who may talk to which agent.

Kept apart from settings because it is reviewed like code: it decides what runs in production.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot import cron


class ConfigError(Exception):
    """Invalid configuration; the message names the setting."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolPolicy(_Strict):
    approvers: list[str] | None = None  # None: the policy's default approvers
    two_person: bool | None = None
    approval_ttl: float | None = Field(None, gt=0)
    command: list[str] | None = Field(None, min_length=1)  # runbook tools: argv with {placeholders}
    timeout: float | None = Field(None, gt=0)
    # a reminder to the approvers this many seconds before the deadline
    remind_before: float | None = Field(None, gt=0)
    # after this many seconds undecided, `escalate_to` may decide too (and is told)
    escalate_after: float | None = Field(None, gt=0)
    escalate_to: list[str] = []

    @model_validator(mode="after")
    def _escalation_has_approvers(self) -> ToolPolicy:
        if self.escalate_after is not None and not self.escalate_to:
            raise ValueError("escalate_after needs escalate_to (who the approval escalates to)")
        return self


class AgentPolicy(_Strict):
    users: list[str] = []  # empty: anyone may talk to the agent
    channels: list[str] = []


class Schedule(_Strict):
    """A scheduled trigger: at each fire time, `agent` receives `message` in a new thread whose
    results go to `slack_channel` and/or `emails`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    cron: str
    timezone: str = "UTC"
    agent: str
    message: str = Field(min_length=1)
    slack_channel: str | None = None
    emails: list[str] = []
    grace: float | None = Field(None, ge=0)  # seconds; None: CHATOPS_SCHEDULE_GRACE

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        cron.zone(value)
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        cron.parse(value)
        return value

    def trigger(self):  # -> apscheduler CronTrigger
        return cron.parse(self.cron, self.timezone)


class Policy(_Strict):
    approvers: list[str] = []  # default approvers of every gated tool; empty: anyone
    two_person: bool = False
    groups: dict[str, list[str]] = {}
    tools: dict[str, ToolPolicy] = {}
    agents: dict[str, AgentPolicy] = {}
    routes: dict[str, str] = {}  # a conversation (Slack channel id) -> the agent that answers there
    schedules: list[Schedule] = []

    @model_validator(mode="after")
    def _groups_exist(self) -> Policy:
        """A misspelt or empty group would leave a tool with no approvers, which means anyone:
        refuse to start instead of failing open."""
        for where, entries in self._identity_lists():
            for entry in entries:
                if not entry.startswith("group:"):
                    continue
                group = entry[6:]
                if group not in self.groups:
                    raise ValueError(f"{where} names group {group!r}, which [groups] does not define")
                if not self.groups[group]:
                    raise ValueError(f"{where} names group {group!r}, which has no members")
        return self

    def _identity_lists(self) -> list[tuple[str, list[str]]]:
        lists = [("approvers", self.approvers)]
        for name, tool in self.tools.items():
            lists += [(f"tools.{name}.approvers", tool.approvers or []),
                      (f"tools.{name}.escalate_to", tool.escalate_to)]
        lists += [(f"agents.{name}.users", agent.users) for name, agent in self.agents.items()]
        return lists

    def check_names(self, agents: dict[str, list[str]]) -> None:
        """Refuse sections that name no agent or tool (`agents`: agent -> its tool names): a
        misspelt `[tools.deploi]` would silently leave deploy on the default approvers."""
        tools = {tool for names in agents.values() for tool in names}
        for name in self.tools:
            if name not in tools:
                raise ConfigError(f"policy: setting 'tools.{name}': no agent has a tool named {name!r} "
                                  f"(tools: {', '.join(sorted(tools))})")
        for where, agent in [*((f"agents.{n}", n) for n in self.agents),
                             *((f"routes.{c}", a) for c, a in self.routes.items())]:
            if agent not in agents:
                raise ConfigError(f"policy: setting '{where}': no agent named {agent!r} "
                                  f"(agents: {', '.join(sorted(agents))})")

    @field_validator("schedules")
    @classmethod
    def _unique_names(cls, value: list[Schedule]) -> list[Schedule]:
        names = [s.name for s in value]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"schedule names must be unique: {', '.join(dupes)}")
        return value

    def tool(self, name: str) -> ToolPolicy:
        return self.tools.get(name, ToolPolicy())

    def agent(self, name: str) -> AgentPolicy:
        return self.agents.get(name, AgentPolicy())

    def schedule(self, name: str) -> Schedule | None:
        return next((s for s in self.schedules if s.name == name), None)

    def approvers_for(self, tool: str) -> list[str]:
        entries = self.tool(tool).approvers
        return list(self.approvers if entries is None else entries)

    def expand(self, entries: list[str]) -> set[str]:
        """Approver entries (user ids, emails, `group:name`) as a set of lower-cased identities."""
        out: set[str] = set()
        for entry in entries:
            if entry.startswith("group:"):
                out |= {m.lower() for m in self.groups.get(entry[6:], [])}
            else:
                out.add(entry.lower())
        return out


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"CHATOPS_POLICY: no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        setting = f"setting '{where}': " if where else ""
        raise ConfigError(f"{path}: {setting}{first['msg']}") from None
