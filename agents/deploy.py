"""The example `deploy` agent: check, deploy and roll back services through runbooks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from bot.agent import Agent
from bot.policy import Policy
from bot.prompts import packaged
from bot.runbook import runbook_tool

# the example runbooks: package data of an installed wheel (`agents._runbooks`), else runbooks/
SOURCE_RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"


def runbook(name: str) -> str:
    """The path of an example runbook, to run (a file on disk: wheels are installed unpacked)."""
    return str(packaged("agents._runbooks", SOURCE_RUNBOOKS) / name)

Name = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$", description="Service name, e.g. api")
Environment = Literal["dev", "staging", "prod"]


class ServiceStatus(BaseModel):
    service: str = Name
    environment: Environment


class Deploy(BaseModel):
    service: str = Name
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,62}$", description="e.g. 1.2.3")
    environment: Environment


class Rollback(BaseModel):
    service: str = Name
    environment: Environment


def build(policy: Policy) -> Agent:
    return Agent(
        name="deploy",
        description="Checks, deploys and rolls back services.",
        prompt="deploy",
        tools=(
            runbook_tool(
                "service_status",
                "Show the health and running version of a service in an environment.",
                ServiceStatus,
                [runbook("service_status.sh"), "{service}", "{environment}"],
                policy=policy,
            ),
            runbook_tool(
                "deploy",
                "Deploy a version of a service to an environment. Production needs approval.",
                Deploy,
                [runbook("deploy.sh"), "{service}", "{version}", "{environment}"],
                policy=policy,
                needs_approval=lambda args: args.environment == "prod",
            ),
            runbook_tool(
                "rollback",
                "Roll a service back to its previous release. Always needs approval.",
                Rollback,
                [runbook("rollback.sh"), "{service}", "{environment}"],
                policy=policy,
                needs_approval=lambda _args: True,
            ),
        ),
    )
