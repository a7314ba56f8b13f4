"""Configuration, read once from the environment (prefix ``BALLAST_``) and passed in.

Every field can be set as ``BALLAST_<FIELD>`` in upper case, for example
``BALLAST_NATS_URL=nats://nats-1:4222``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import make_url

from bulkheads import BreakerPolicy
from outbox.database import sqlite_url
from outbox.retention import RetentionPolicy
from services.authorization import AfterUntrusted
from services.pricing import DEFAULT_PRICES, ModelPrice
from services.rate_limits import RateLimit


class Settings(BaseSettings):
    """Ballast's settings. Defaults run everything on one machine with no setup."""

    model_config = SettingsConfigDict(env_prefix="BALLAST_", extra="ignore", frozen=True)

    nats_url: str | None = Field(
        default=None,
        description="NATS server(s), comma separated. Unset: start an embedded nats-server.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy async URL, e.g. postgresql+asyncpg://user@host/db. "
            "Unset: a SQLite file in data_dir."
        ),
    )
    nats_nkey_seed: SecretStr | None = Field(
        default=None,
        description="This service's NATS user (nkey seed), from 'ballast nats-config'.",
    )
    nats_inbox_prefix: str = Field(
        default="_INBOX",
        description="Reply subjects of this service; its NATS user may read only these.",
    )
    service_file: Path | None = Field(
        default=None,
        description="TOML file with the limits of the service 'ballast run' starts "
        "(pool, retry, budget, allow-list); see docs/services.md.",
    )
    data_dir: Path = Field(
        default=Path(".ballast"),
        description="Where the embedded broker and the SQLite database keep their files.",
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: console on a terminal, JSON otherwise."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    dedup_window_s: float = Field(
        default=120.0, gt=0, description="JetStream duplicate window of every stream."
    )
    stream_replicas: int = Field(
        default=1, ge=1, le=5, description="Replicas per stream (3 on a 3-node cluster)."
    )
    results_max_age_s: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="How long results and events stay in their streams (seconds).",
    )
    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_sweep_interval_s: float = Field(default=1.0, gt=0)
    group_commit_max_units: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Most units of work (steps, calls) one shared transaction carries.",
    )
    group_commit_window_s: float = Field(
        default=0.0,
        ge=0,
        le=0.1,
        description=(
            "Extra wait to gather units for a shared transaction; 0 writes as soon as the "
            "previous one committed."
        ),
    )
    ack_wait_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long the broker waits for a worker's sign of life before redelivering; "
            "running handlers report progress well within it."
        ),
    )

    model_prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description=(
            "Prices per model (JSON), added to the built-in table, e.g. "
            '{"gpt-4o-mini": {"input_usd_per_mtok": 0.15, "output_usd_per_mtok": 0.6}}.'
        ),
    )
    rate_limits: dict[str, RateLimit] = Field(
        default_factory=dict,
        description=(
            "Limits per model (JSON), shared by every replica, e.g. "
            '{"gpt-4o-mini": {"requests": 500, "tokens": 200000}} per minute; '
            '"window_s" changes the window, "per_tenant": true gives each tenant its own.'
        ),
    )
    breaker_window: int = Field(default=20, ge=1, description="Outcomes a breaker counts.")
    breaker_minimum_calls: int = Field(default=5, ge=1)
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_open_s: float = Field(default=30.0, gt=0, description="Pause of an open breaker.")

    env: Literal["development", "production"] = Field(
        default="development",
        description=(
            "production refuses to start without configured keys; development makes a "
            "local key in data_dir and trusts it."
        ),
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="nkey seed (SU...) this process signs principals and approvals with.",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="Public nkeys (U...) whose signed principals are accepted (JSON list).",
    )
    approver_keys: list[str] = Field(
        default_factory=list,
        description="Public nkeys (U...) whose approval grants are accepted (JSON list).",
    )
    approval_ttl_s: float = Field(
        default=24 * 3600.0, gt=0, description="An approval nobody decides in time is denied."
    )
    principal_ttl_s: float = Field(
        default=24 * 3600.0, gt=0, description="Lifetime of principals this process signs."
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token of the approval HTTP endpoint."
    )
    max_payload_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Larger messages are dead-lettered unread."
    )
    secrets: list[SecretStr] = Field(
        default_factory=list,
        description="Values redacted from logs, journals and dead letters (JSON list).",
    )

    untrusted_rules: dict[str, dict[str, AfterUntrusted]] = Field(
        default_factory=dict,
        description=(
            "Per tenant and tool, what a sensitive tool does after untrusted content: "
            '{"acme": {"send_email": "refuse"}} (approve, refuse or allow).'
        ),
    )
    approval_sweep_s: float = Field(
        default=5.0, gt=0, description="How often agent hosts expire overdue approvals."
    )

    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint for models not declared in code."
    )
    openai_api_key: SecretStr | None = None
    http_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve /metrics and /health on this port (0: a free one); off when unset.",
    )
    http_host: str = Field(default="127.0.0.1", description="Address of the /metrics endpoint.")
    metrics_interval_s: float = Field(
        default=5.0, gt=0, description="How often backlog, DLQ, breaker and outbox gauges refresh."
    )
    tracing: Literal["off", "console", "otlp"] = Field(
        default="off",
        description=(
            "OpenTelemetry spans: off, printed to the console, or sent over OTLP/HTTP to "
            "OTEL_EXPORTER_OTLP_ENDPOINT (the standard OTEL_* variables apply)."
        ),
    )
    shutdown_grace_s: float = Field(
        default=20.0,
        gt=0,
        description=(
            "On SIGTERM, how long in-flight messages may finish; the rest are handed back "
            "(nak) for another replica at once."
        ),
    )
    retention_sent_s: float = Field(
        default=86_400, gt=0, description="How long sent outbox rows are kept."
    )
    retention_journal_s: float = Field(
        default=30 * 86_400, gt=0, description="How long journals of finished runs are kept."
    )
    retention_ended_s: float = Field(
        default=30 * 86_400,
        gt=0,
        description="How long invalidated or expired memory and closed sessions are kept.",
    )
    retention_interval_s: float = Field(
        default=3600, ge=0, description="How often a service prunes by that policy; 0: never."
    )
    auto_migrate: bool | None = Field(
        default=None,
        description=(
            "Apply database migrations when a service starts. Default: only for the embedded "
            "SQLite file; with BALLAST_DATABASE_URL set, run 'ballast db upgrade' once per "
            "deployment and services refuse an outdated schema."
        ),
    )
    service_name: str = Field(
        default="ballast", description="service.name of this process's spans."
    )

    def secret_values(self) -> list[str]:
        """Every configured value that must never be logged or stored."""
        values = [s.get_secret_value() for s in self.secrets]
        for secret in (
            self.signing_key,
            self.admin_token,
            self.nats_nkey_seed,
            self.openai_api_key,
        ):
            if secret is not None:
                values.append(secret.get_secret_value())
        for url in (self.database_url, self.nats_url):
            password = make_url(url).password if url and "://" in url and "@" in url else None
            if password:
                values.append(str(password))
        return values

    @property
    def prices(self) -> dict[str, ModelPrice]:
        """The built-in price table with the configured prices on top."""
        return {**DEFAULT_PRICES, **self.model_prices}

    @property
    def breaker_policy(self) -> BreakerPolicy:
        return BreakerPolicy(
            window=self.breaker_window,
            minimum_calls=self.breaker_minimum_calls,
            failure_rate=self.breaker_failure_rate,
            open_for_s=self.breaker_open_s,
        )

    @property
    def embedded_nats(self) -> bool:
        """True when Ballast must start its own nats-server."""
        return not self.nats_url

    @property
    def retention(self) -> RetentionPolicy:
        return RetentionPolicy(
            sent_for=timedelta(seconds=self.retention_sent_s),
            journal_for=timedelta(seconds=self.retention_journal_s),
            ended_for=timedelta(seconds=self.retention_ended_s),
        )

    @property
    def migrates_itself(self) -> bool:
        """Whether a starting service applies migrations itself (see ``auto_migrate``)."""
        return self.auto_migrate if self.auto_migrate is not None else self.database_url is None

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in ``data_dir``."""
        return self.database_url or sqlite_url(self.data_dir.resolve() / "ballast.db")
