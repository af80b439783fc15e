"""The policy file (TOML): who may approve what, runbook commands, who may talk to which agent.

Kept apart from settings because it is reviewed like code: it decides what runs in production.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot import cron
from bot.people import ANYONE, GROUP, People, norm


class ConfigError(Exception):
    """Invalid configuration; the message names the setting."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _approver_list(value: list[str] | None) -> list[str] | None:
    """An empty list would mean nobody, or (as it once did) anyone: refused; anyone is `["*"]`."""
    if value is not None and not value:
        raise ValueError('an empty approver list is refused: name the approvers, or write ["*"] for anyone')
    if value is not None and ANYONE in value and len(value) > 1:
        raise ValueError('"*" (anyone) cannot be combined with other approvers')
    return value


Scalar = str | int | float | bool


class ToolPolicy(_Strict):
    approvers: list[str] | None = None  # None: the policy's default approvers
    two_person: bool | None = None
    quorum: int | None = Field(None, ge=1)  # distinct people who must approve (None: the default)
    # the policy may gate any tool, whatever its code says (never remove a gate the code sets)
    require_approval: bool = False
    when: dict[str, list[Scalar]] | None = None  # only for these argument values (all must match)
    approval_ttl: float | None = Field(None, gt=0)
    command: list[str] | None = Field(None, min_length=1)  # runbook tools: argv with {placeholders}
    timeout: float | None = Field(None, gt=0)
    # a reminder to the approvers this many seconds before the deadline
    remind_before: float | None = Field(None, gt=0)
    # after this many seconds undecided, `escalate_to` may decide too (and is told)
    escalate_after: float | None = Field(None, gt=0)
    escalate_to: list[str] = []

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str] | None) -> list[str] | None:
        return _approver_list(value)

    @model_validator(mode="after")
    def _escalation_has_approvers(self) -> ToolPolicy:
        if self.escalate_after is not None and not self.escalate_to:
            raise ValueError("escalate_after needs escalate_to (who the approval escalates to)")
        if self.when is not None and not self.require_approval:
            raise ValueError("when applies to require_approval = true only")
        if self.when is not None and not all(self.when.values()):
            raise ValueError("when: each argument needs at least one value")
        return self

    def approval_settings(self) -> list[str]:
        """The approval settings this section sets (an error on a tool nothing gates)."""
        names = ("approvers", "two_person", "quorum", "approval_ttl", "remind_before", "escalate_after")
        return [n for n in names if getattr(self, n) is not None] + (["escalate_to"] if self.escalate_to else [])

    def requires(self, args: Mapping[str, Any]) -> bool:
        """Whether the policy gates a call with these (validated) arguments."""
        if not self.require_approval:
            return False
        return self.when is None or all(args.get(k) in values for k, values in self.when.items())


class AgentPolicy(_Strict):
    users: list[str] = []  # empty: anyone may talk to the agent
    channels: list[str] = []
    # declarative agents (MCP tools): an agent section with a prompt_file is an agent of its own
    description: str = ""
    prompt_file: str | None = None  # relative to the policy file
    tools: list[str] = []  # "mcp:server", "mcp:server/tool", "runbook:name"

    @field_validator("tools")
    @classmethod
    def _tool_refs(cls, value: list[str]) -> list[str]:
        for ref in value:
            if not _TOOL_REF.match(ref):
                raise ValueError(f"{ref!r}: a tool is 'mcp:SERVER', 'mcp:SERVER/TOOL' or 'runbook:NAME'")
        return value


_TOOL_REF = re.compile(r"^(mcp:[A-Za-z0-9-]{1,32}(/[^\s]+)?|runbook:[A-Za-z0-9_-]{1,64})$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, where: str) -> str:
    """`${VAR}` from the environment only (never from the policy file); a missing one is an error."""
    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(sub, value)


class McpServer(_Strict):
    """An MCP server: `command` (stdio) or `url` (streamable HTTP). Every tool needs an approval
    unless `safe` lists it (glob patterns); the server's own annotations never remove a gate."""

    command: list[str] | None = Field(None, min_length=1)
    env: dict[str, str] = {}  # added to a minimal environment; values may use ${VAR}
    url: str | None = Field(None, pattern=r"^https?://")
    headers: dict[str, str] = {}  # values may use ${VAR}
    safe: list[str] = []
    timeout: float = Field(60.0, gt=0)
    approvers: list[str] | None = None  # None: the policy's default approvers

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server has either command (stdio) or url (streamable HTTP)")
        if self.command is None and self.env:
            raise ValueError("env is for stdio servers (command); an HTTP server takes headers")
        if self.url is None and self.headers:
            raise ValueError("headers are for HTTP servers (url)")
        return self


class RunbookArg(_Strict):
    description: str = ""
    pattern: str = r"^[A-Za-z0-9._-]+$"
    allow_dash: bool = False  # may the value start with "-" (an option)?

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class RunbookSpec(_Strict):
    """A declared runbook: argv with {arg} placeholders, never a shell."""

    description: str = ""
    command: list[str] = Field(min_length=1)
    args: dict[str, RunbookArg] = {}
    needs_approval: bool = True
    timeout: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _placeholders_declared(self) -> RunbookSpec:
        for part in self.command:
            for name in re.findall(r"\{([^{}]*)\}", part):
                if name not in self.args:
                    raise ValueError(f"command uses {{{name}}}, which args does not declare")
        return self


class Schedule(_Strict):
    """A scheduled trigger: at each fire time, `agent` receives `message` in a new thread whose
    results go to `to`: channel -> its targets (`{slack = ["C0123"], email = ["ops@x.com"]}`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    cron: str
    timezone: str = "UTC"
    agent: str
    message: str = Field(min_length=1)
    to: dict[str, list[str]] = {}
    grace: float | None = Field(None, ge=0)  # seconds; None: CHATOPS_SCHEDULE_GRACE

    @field_validator("to")
    @classmethod
    def _targets(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        return {name: list(dict.fromkeys(targets)) for name, targets in value.items() if targets}

    def where(self) -> str:
        """Where its results go, for people: `slack C0123, email ops@x.com`."""
        return ", ".join(f"{name} {', '.join(targets)}" for name, targets in self.to.items())

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

    def trigger(self) -> CronTrigger:
        return cron.parse(self.cron, self.timezone)


class Policy(_Strict):
    # default approvers of every gated tool; none configured: anyone who may talk to the agent
    approvers: list[str] | None = None
    two_person: bool = False
    quorum: int = Field(1, ge=1)
    people: dict[str, list[str]] = {}  # a person -> the identities that are theirs
    groups: dict[str, list[str]] = {}  # a group -> people by name, or raw identities
    tools: dict[str, ToolPolicy] = {}
    agents: dict[str, AgentPolicy] = {}
    routes: dict[str, str] = {}  # a conversation (Slack channel id) -> the agent that answers there
    schedules: list[Schedule] = []
    mcp: dict[str, McpServer] = {}
    runbooks: dict[str, RunbookSpec] = {}
    # the policy file's directory (prompt files are relative to it), set by load_policy
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    # shortened model-facing MCP tool names -> "server.tool", registered as tools are listed
    _mcp_aliases: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("mcp")
    @classmethod
    def _server_names(cls, value: dict[str, McpServer]) -> dict[str, McpServer]:
        for name in value:  # no "_": "<server>__<tool>" must split back unambiguously
            if not re.fullmatch(r"[A-Za-z0-9-]{1,32}", name):
                raise ValueError(f"MCP server name {name!r}: use letters, digits and '-' (at most 32)")
        return value

    @field_validator("approvers")
    @classmethod
    def _approvers(cls, value: list[str] | None) -> list[str] | None:
        return _approver_list(value)

    @field_validator("people")
    @classmethod
    def _one_owner(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        """An identity two people claim would let one vote as the other."""
        owner: dict[str, str] = {}
        for name, identities in value.items():
            if not name.strip() or name == ANYONE or name.startswith(GROUP) or "@" in name:
                raise ValueError(f"{name!r} is not a person's name (use a plain name, e.g. alice)")
            for identity in [name, *identities]:
                key = norm(identity)
                if owner.setdefault(key, name) != name:
                    raise ValueError(f"{identity!r} belongs to both {owner[key]!r} and {name!r}")
        return value

    @cached_property
    def who(self) -> People:
        return People(self.people, self.groups)

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
        lists = [("approvers", self.approvers or [])]
        for name, tool in self.tools.items():
            lists += [(f"tools.{name}.approvers", tool.approvers or []),
                      (f"tools.{name}.escalate_to", tool.escalate_to)]
        lists += [(f"agents.{name}.users", agent.users) for name, agent in self.agents.items()]
        lists += [(f"mcp.{name}.approvers", server.approvers or []) for name, server in self.mcp.items()]
        return lists

    def check_names(self, agents: dict[str, list[str]]) -> None:
        """Refuse sections that name no agent or tool (`agents`: agent -> its tool names): a
        misspelt `[tools.deploi]` would silently leave deploy on the default approvers."""
        tools = {tool for names in agents.values() for tool in names}
        for name in self.tools:
            if name.split(".", 1)[0] in self.mcp and "." in name:
                continue  # an MCP server's tools are known once it runs (`chatops doctor` lists them)
            if name not in tools:
                raise ConfigError(f"policy: setting 'tools.{name}': no agent has a tool named {name!r} "
                                  f"(tools: {', '.join(sorted(tools))})")
        for where, agent in [*((f"agents.{n}", n) for n in self.agents),
                             *((f"routes.{c}", a) for c, a in self.routes.items())]:
            if agent not in agents:
                raise ConfigError(f"policy: setting '{where}': no agent named {agent!r} "
                                  f"(agents: {', '.join(sorted(agents))})")

    def check_gates(self, tools: Mapping[str, tuple[bool, list[str]]]) -> None:
        """Refuse approval settings that would gate nothing (`tools`: tool -> (whether its code
        may ask for an approval, its argument names)): an operator must never believe a tool is
        gated when it is not. And a quorum the approvers cannot reach."""
        for name, tool in self.tools.items():
            if name.split(".", 1)[0] in self.mcp:  # an MCP tool: its approval rules are its gate
                continue
            gated_in_code, fields = tools.get(name, (False, []))
            where = f"policy: setting 'tools.{name}"
            if not gated_in_code and not tool.require_approval and (settings := tool.approval_settings()):
                raise ConfigError(f"{where}.{settings[0]}': {name} never asks for an approval, so this "
                                  "would gate nothing; add require_approval = true to gate it")
            for key in tool.when or {}:
                if key not in fields:
                    raise ConfigError(f"{where}.when.{key}': {name} has no argument {key!r} "
                                      f"(arguments: {', '.join(fields)})")
        for name in tools:
            people = self.who.expand(self.approvers_for(name))
            if people is not None and len(people) < self.quorum_for(name):
                raise ConfigError(f"policy: setting 'tools.{name}.quorum': {self.quorum_for(name)} approvals "
                                  f"needed but only {len(people)} approver(s) named")

    @field_validator("schedules")
    @classmethod
    def _unique_names(cls, value: list[Schedule]) -> list[Schedule]:
        names = [s.name for s in value]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"schedule names must be unique: {', '.join(dupes)}")
        return value

    def tool(self, name: str) -> ToolPolicy:
        key = self.mcp_key(name)
        found = self.tools.get(key, ToolPolicy())
        server = self.mcp.get(key.split(".", 1)[0]) if key != name else None
        if server is not None and found.approvers is None:  # the server's approvers, then the default
            found = found.model_copy(update={"approvers": server.approvers})
        return found

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def alias_mcp_tool(self, model_name: str, key: str) -> None:
        self._mcp_aliases[model_name] = key

    def mcp_key(self, name: str) -> str:
        """The policy key of a model-facing MCP tool name: `git__git_commit` -> `git.git_commit`
        (a shortened name maps through the aliases the MCP tools registered)."""
        if name in self._mcp_aliases:
            return self._mcp_aliases[name]
        server, sep, tool = name.partition("__")
        return f"{server}.{tool}" if sep and server in self.mcp else name

    def agent(self, name: str) -> AgentPolicy:
        return self.agents.get(name, AgentPolicy())

    def schedule(self, name: str) -> Schedule | None:
        return next((s for s in self.schedules if s.name == name), None)

    def approvers_for(self, tool: str) -> list[str]:
        """The approver entries of a tool; `["*"]` (anyone who may talk to the agent) when the
        policy names none at all."""
        entries = self.tool(tool).approvers
        return list(entries if entries is not None else self.approvers or [ANYONE])

    def quorum_for(self, tool: str) -> int:
        quorum = self.tool(tool).quorum
        return self.quorum if quorum is None else quorum

    def two_person_for(self, tool: str) -> bool:
        two_person = self.tool(tool).two_person
        return self.two_person if two_person is None else two_person

    def requires_approval(self, tool: str, args: Mapping[str, Any]) -> bool:
        return self.tool(tool).requires(args)

    def expand(self, entries: list[str]) -> set[str]:
        """Entries (people, identities, `group:name`) as the set of every identity of the people
        they name, lower-cased: where to reach them."""
        return set(self.who.contacts(e for e in entries if e != ANYONE))

    def allows(self, entries: list[str], identity: str | None) -> bool:
        """Whether `identity`'s person is among the people `entries` name (`*`: anyone)."""
        people = self.who.expand(entries)
        return people is None or self.who.person(identity) in people


def load_policy(path: Path | None) -> Policy:
    if path is None:
        return Policy()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"CHATOPS_POLICY: no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    _refuse_gone_keys(data)
    try:
        policy = Policy.model_validate(data)
        policy._base_dir = path.resolve().parent
        return policy
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        setting = f"setting '{where}': " if where else ""
        raise ConfigError(f"{path}: {setting}{first['msg']}") from None


# the schedule keys that named one channel each, before `to` named any channel
_GONE_SCHEDULE_KEYS = {"slack_channel": "slack", "emails": "email"}


def _refuse_gone_keys(data: dict[str, Any]) -> None:
    """A policy written for the older schedule keys gets the `to` to write instead, not pydantic's
    'extra inputs are not permitted'."""
    schedules = data.get("schedules")
    for i, entry in enumerate(schedules if isinstance(schedules, list) else []):
        if not isinstance(entry, dict) or not (gone := [k for k in _GONE_SCHEDULE_KEYS if k in entry]):
            continue
        to = {k: list(v) for k, v in entry.get("to", {}).items()} if isinstance(entry.get("to"), dict) else {}
        for key in gone:
            value = entry[key]
            to.setdefault(_GONE_SCHEDULE_KEYS[key], []).extend(value if isinstance(value, list) else [value])
        written = ", ".join(f"{name} = [{', '.join(json.dumps(str(t)) for t in targets)}]"
                            for name, targets in to.items())
        keys = " and ".join(f"'{k}'" for k in gone)
        raise ConfigError(f"policy: schedules.{entry.get('name', i)}: {keys} "
                          f"{'is' if len(gone) == 1 else 'are'} gone: write to = {{ {written} }}")
