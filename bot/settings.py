"""Settings from the environment (and a `.env` file): secrets, endpoints and tuning.

These are the core's; each channel reads its own (channels/slack/settings.py, channels/email/
settings.py) the same way, from the same environment and `.env`: every settings model derives
from `EnvSettings`, and names each field's variable in its `validation_alias`, so that an error
names the variable to correct.

Policy (who approves what, runbook commands, schedules) lives in the policy file, see policy.py.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.redis_client import check_scheme


def env(*names: str) -> AliasChoices:
    """The environment variable(s) a field is read from."""
    return AliasChoices(*names)


class EnvSettings(BaseSettings):
    """Read from the environment and `.env`; an empty variable counts as unset. Tests pass
    `_env_file=None` and the fields by name."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )


def secret_env_names(model: type[BaseSettings]) -> frozenset[str]:
    """The environment variables of the model's SecretStr fields (the bot's own secrets)."""
    names: set[str] = set()
    for field in model.model_fields.values():
        secret = field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)
        if secret and isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice) for choice in field.validation_alias.choices)
    return frozenset(names)


def invalid_setting(exc: ValidationError) -> str:
    """The first error of a settings model, naming its variable: "setting PORT: <why>"."""
    first = exc.errors()[0]
    return f"setting {'.'.join(map(str, first['loc']))}: {first['msg']}"


class Settings(EnvSettings):
    # storage
    redis_url: str | None = Field(None, validation_alias=env("REDIS_URL"))
    data_dir: Path = Field(Path(".chatops"), validation_alias=env("CHATOPS_DATA_DIR"))
    key_prefix: str = Field("chatops:", validation_alias=env("CHATOPS_KEY_PREFIX"))

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=env("CHATOPS_LOG_LEVEL")
    )

    # policy file
    policy_file: Path | None = Field(None, validation_alias=env("CHATOPS_POLICY"))
    default_agent: str = Field("deploy", validation_alias=env("CHATOPS_DEFAULT_AGENT"))

    # HTTP API
    host: str = Field("127.0.0.1", validation_alias=env("CHATOPS_HOST"))
    port: int = Field(8080, ge=0, le=65535, validation_alias=env("PORT"))
    api_token: SecretStr | None = Field(None, validation_alias=env("CHATOPS_API_TOKEN"))

    # model
    anthropic_api_key: SecretStr | None = Field(None, validation_alias=env("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = Field(None, validation_alias=env("ANTHROPIC_BASE_URL"))
    model: str = Field("claude-sonnet-4-6", validation_alias=env("CHATOPS_MODEL"))
    model_max_tokens: int = Field(1024, ge=1, validation_alias=env("CHATOPS_MODEL_MAX_TOKENS"))
    model_timeout: float = Field(60.0, gt=0, validation_alias=env("CHATOPS_MODEL_TIMEOUT"))
    model_retries: int = Field(3, ge=0, le=10, validation_alias=env("CHATOPS_MODEL_RETRIES"))
    # a slow model (issue 9): the whole call, retries included, is given up after model_deadline;
    # after model_slow_notice the human is told once that the bot is still working
    model_deadline: float = Field(90.0, gt=0, validation_alias=env("CHATOPS_MODEL_DEADLINE"))
    model_slow_notice: float = Field(15.0, gt=0, validation_alias=env("CHATOPS_MODEL_SLOW_NOTICE"))

    # signing of approval tokens (Slack button values, email reply addresses)
    signing_key: SecretStr | None = Field(None, validation_alias=env("CHATOPS_SIGNING_KEY"))

    # the step loop
    step_budget: int = Field(10, ge=1, validation_alias=env("CHATOPS_STEP_BUDGET"))
    error_budget: int = Field(3, ge=1, validation_alias=env("CHATOPS_ERROR_BUDGET"))
    approval_ttl: float = Field(86400.0, gt=0, validation_alias=env("CHATOPS_APPROVAL_TTL"))
    lease_ttl: float = Field(30.0, gt=0, validation_alias=env("CHATOPS_LEASE_TTL"))
    claim_idle: float = Field(60.0, gt=0, validation_alias=env("CHATOPS_CLAIM_IDLE"))
    worker_concurrency: int = Field(1000, ge=1, validation_alias=env("CHATOPS_WORKER_CONCURRENCY"))
    sweep_interval: float = Field(5.0, gt=0, validation_alias=env("CHATOPS_SWEEP_INTERVAL"))
    # on SIGTERM, how long a worker lets the threads it is advancing reach a pause (a platform's
    # kill usually follows 30 s after its SIGTERM)
    shutdown_grace: float = Field(20.0, ge=0, validation_alias=env("CHATOPS_SHUTDOWN_GRACE"))
    tool_output_limit: int = Field(2000, ge=200, validation_alias=env("CHATOPS_TOOL_OUTPUT_LIMIT"))

    # ---- approvals people can trust (issue 10): live policy, request throttle
    # seconds between looks at the policy file for changes (0: only SIGHUP reloads it)
    policy_poll: float = Field(2.0, ge=0, validation_alias=env("CHATOPS_POLICY_POLL"))
    # new threads one requester (sender address, Slack id, API/console name) may start per hour
    requests_per_hour: int = Field(20, ge=1, validation_alias=env("CHATOPS_REQUESTS_PER_HOUR"))

    # ---- the front door and long threads (issue 12): request limits, context budget, cache size
    max_body: int = Field(1024 * 1024, ge=1024, validation_alias=env("CHATOPS_MAX_BODY"))
    http_max_connections: int = Field(256, ge=1, validation_alias=env("CHATOPS_HTTP_MAX_CONNECTIONS"))
    http_header_timeout: float = Field(10.0, gt=0, validation_alias=env("CHATOPS_HTTP_HEADER_TIMEOUT"))
    http_body_timeout: float = Field(30.0, gt=0, validation_alias=env("CHATOPS_HTTP_BODY_TIMEOUT"))
    http_keep_alive: float = Field(5.0, gt=0, validation_alias=env("CHATOPS_HTTP_KEEP_ALIVE"))
    context_tokens: int = Field(60_000, ge=2000, validation_alias=env("CHATOPS_CONTEXT_TOKENS"))
    worker_cache_mb: float = Field(256.0, gt=0, validation_alias=env("CHATOPS_WORKER_CACHE_MB"))

    # ---- production (Sentinel/replicas, metrics, logs)
    # replicas that must acknowledge a tool's start marker (and a decision, an acknowledged
    # intake) before it counts; 0 for a single Redis
    redis_min_replicas: int = Field(0, ge=0, validation_alias=env("CHATOPS_REDIS_MIN_REPLICAS"))
    redis_replica_timeout: float = Field(1.0, gt=0, le=5, validation_alias=env("CHATOPS_REDIS_REPLICA_TIMEOUT"))
    metrics_port: int | None = Field(None, ge=0, le=65535, validation_alias=env("CHATOPS_METRICS_PORT"))
    log_format: Literal["text", "json"] = Field("text", validation_alias=env("CHATOPS_LOG_FORMAT"))
    # the inbox as N streams (a thread always on the same one; every worker reads all of them)
    inbox_shards: int = Field(1, ge=1, le=256, validation_alias=env("CHATOPS_INBOX_SHARDS"))

    # `chatops doctor`: how long each check (run side by side) may take before it is named as silent
    doctor_timeout: float = Field(2.5, gt=0, validation_alias=env("CHATOPS_DOCTOR_TIMEOUT"))

    # ---- schedules
    # a fire missed while no process ran still happens on start if it is at most this old (seconds)
    schedule_grace: float = Field(600.0, ge=0, validation_alias=env("CHATOPS_SCHEDULE_GRACE"))

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None:
            check_scheme(value)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("key_prefix")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("must not contain { or } (they are Redis Cluster hash tags)")
        return value

    @property
    def model_configured(self) -> bool:
        return self.anthropic_api_key is not None and bool(self.anthropic_api_key.get_secret_value())

    def resolved_policy_file(self) -> Path | None:
        if self.policy_file is not None:
            return self.policy_file
        default = Path("chatops.toml")
        return default if default.exists() else None
