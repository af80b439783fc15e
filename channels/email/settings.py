"""The email channel's settings: CHATOPS_EMAIL_…, CHATOPS_SMTP_… and SMTP_URL in the environment
or `.env` (as bot/settings.py reads the core's).

With no domain configured, the SMTP listener still runs on loopback for `<agent>@localhost`
(receive only), so a fresh `make run` can be written to; CHATOPS_SMTP_ENABLED=false turns it off.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from bot.settings import EnvSettings, env

LOCAL_EMAIL_DOMAIN = "localhost"


class EmailSettings(EnvSettings):
    email_domain: str = Field(LOCAL_EMAIL_DOMAIN, min_length=1, validation_alias=env("CHATOPS_EMAIL_DOMAIN"))
    smtp_enabled: bool = Field(True, validation_alias=env("CHATOPS_SMTP_ENABLED"))
    email_from: str | None = Field(None, validation_alias=env("CHATOPS_EMAIL_FROM"))
    # the inbound SMTP server
    smtp_host: str = Field("127.0.0.1", validation_alias=env("CHATOPS_SMTP_HOST"))
    smtp_port: int = Field(2525, ge=0, le=65535, validation_alias=env("CHATOPS_SMTP_PORT"))
    smtp_max_size: int = Field(10 * 1024 * 1024, ge=1024, validation_alias=env("CHATOPS_SMTP_MAX_SIZE"))
    smtp_tls_cert: Path | None = Field(None, validation_alias=env("CHATOPS_SMTP_TLS_CERT"))
    smtp_tls_key: Path | None = Field(None, validation_alias=env("CHATOPS_SMTP_TLS_KEY"))
    smtp_require_tls: bool = Field(False, validation_alias=env("CHATOPS_SMTP_REQUIRE_TLS"))
    smtp_auth_user: str | None = Field(None, validation_alias=env("CHATOPS_SMTP_AUTH_USER"))
    smtp_auth_password: SecretStr | None = Field(None, validation_alias=env("CHATOPS_SMTP_AUTH_PASSWORD"))
    # the outbound relay
    smtp_url: SecretStr | None = Field(None, validation_alias=env("SMTP_URL"))
    smtp_send_retries: int = Field(4, ge=0, le=10, validation_alias=env("CHATOPS_SMTP_SEND_RETRIES"))
    smtp_send_backoff: float = Field(1.0, gt=0, validation_alias=env("CHATOPS_SMTP_SEND_BACKOFF"))
    smtp_send_timeout: float = Field(30.0, gt=0, validation_alias=env("CHATOPS_SMTP_SEND_TIMEOUT"))
    email_authserv_id: str | None = Field(None, validation_alias=env("CHATOPS_EMAIL_AUTHSERV_ID"))
    email_rate_limit: int = Field(30, ge=1, validation_alias=env("CHATOPS_EMAIL_RATE_LIMIT"))
    email_reply_ttl: float = Field(30 * 86400.0, gt=0, validation_alias=env("CHATOPS_EMAIL_REPLY_TTL"))
    # hardening (issue 11): connection caps, timeouts, the relays whose Authentication-Results
    # are believed (comma-separated addresses or networks)
    smtp_max_connections: int = Field(200, ge=1, validation_alias=env("CHATOPS_SMTP_MAX_CONNECTIONS"))
    smtp_max_per_ip: int = Field(20, ge=1, validation_alias=env("CHATOPS_SMTP_MAX_PER_IP"))
    smtp_timeout: float = Field(300.0, gt=0, validation_alias=env("CHATOPS_SMTP_TIMEOUT"))
    smtp_trusted_relays: str = Field("127.0.0.1,::1", validation_alias=env("CHATOPS_SMTP_TRUSTED_RELAYS"))

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().split("://", 1)[0] not in ("smtp", "smtps"):
            raise ValueError("must start with smtp:// or smtps://")
        return value

    @property
    def email_local(self) -> bool:
        """Whether email is the no-configuration default: a loopback listener, receive only."""
        return self.email_domain == LOCAL_EMAIL_DOMAIN
