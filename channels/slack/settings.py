"""The Slack channel's settings: SLACK_… in the environment or `.env` (as bot/settings.py reads
the core's). The bot token is required for either way of connecting; without it the channel is off.
"""

from __future__ import annotations

from pydantic import Field, SecretStr

from bot.settings import EnvSettings, env


class SlackSettings(EnvSettings):
    bot_token: SecretStr | None = Field(None, validation_alias=env("SLACK_BOT_TOKEN"))
    # HTTP events at /slack/events on the bot's server
    signing_secret: SecretStr | None = Field(None, validation_alias=env("SLACK_SIGNING_SECRET"))
    # Socket Mode (xapp-): no public URL needed
    app_token: SecretStr | None = Field(None, validation_alias=env("SLACK_APP_TOKEN"))
    api_url: str | None = Field(None, validation_alias=env("SLACK_API_URL"))  # tests, proxies
    allow_bots: bool = Field(False, validation_alias=env("SLACK_ALLOW_BOTS"))
    working_reaction: str = Field("eyes", min_length=1, validation_alias=env("SLACK_WORKING_REACTION"))
    # match a Slack user to a [people] person by their profile's email (users.info, scope
    # users:read.email), cached this many seconds
    match_email: bool = Field(False, validation_alias=env("SLACK_MATCH_EMAIL"))
    email_ttl: float = Field(3600.0, gt=0, validation_alias=env("SLACK_EMAIL_TTL"))

    @property
    def configured(self) -> bool:
        return self.bot_token is not None and bool(self.bot_token.get_secret_value())
