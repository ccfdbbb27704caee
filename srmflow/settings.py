"""srmflow configuration: one pydantic-settings ``Settings`` built by each entry point.

SRM sites are named. The one-site case uses plain ``SRMFLOW_SRM_*`` variables and names the site
``default``; several sites come from ``SRMFLOW_SITES`` (JSON object) or ``SRMFLOW_SITES_FILE``
(YAML or JSON file), keyed by site name. Every password can also be read from a file
(``*_FILE`` variables, or ``password_file`` keys), which is how container secrets arrive.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SITE = "default"

# Single-site environment variables and the SrmSiteSettings field each one fills.
SINGLE_SITE_ENV: dict[str, str] = {
    "SRMFLOW_SRM_URL": "url",
    "SRMFLOW_SRM_USERNAME": "username",
    "SRMFLOW_SRM_PASSWORD": "password",
    "SRMFLOW_SRM_REMOTE_USERNAME": "remote_username",
    "SRMFLOW_SRM_REMOTE_PASSWORD": "remote_password",
    "SRMFLOW_SRM_VERIFY_TLS": "verify_tls",
    "SRMFLOW_SRM_CA_BUNDLE": "ca_bundle",
    "SRMFLOW_SRM_REQUEST_TIMEOUT": "request_timeout",
    "SRMFLOW_SRM_CONNECT_TIMEOUT": "connect_timeout",
    "SRMFLOW_SRM_MAX_IN_FLIGHT": "max_in_flight",
    "SRMFLOW_SRM_MAX_REQUESTS": "max_requests",
    "SRMFLOW_SRM_MAX_OPERATIONS": "max_operations",
}
SECRET_FIELDS = ("password", "remote_password")


class ConfigError(Exception):
    """Configuration is missing or malformed; the message names the variable and the fix."""


class SrmSiteSettings(BaseModel):
    """Connection settings of one SRM site (the SRM appliance srmflow talks to)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = DEFAULT_SITE
    url: str = Field(description="SRM REST API base, e.g. https://srm.example/api/rest/srm/v2")
    username: str = Field(description="Local SSO user for POST /session")
    password: SecretStr = Field(description="Password of the local user")
    remote_username: str = Field(description="Remote-site SSO user for the remote session")
    remote_password: SecretStr = Field(description="Password of the remote-site user")
    verify_tls: bool = Field(True, description="Verify the SRM certificate (keep on)")
    ca_bundle: Path | None = Field(None, description="PEM CA bundle that signs the SRM cert")
    request_timeout: float = Field(30.0, gt=0, description="Total seconds per SRM request")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to open a connection")
    max_in_flight: int = Field(
        8, ge=1, le=256, description="Concurrent requests from one process to this SRM"
    )
    max_requests: int = Field(
        16,
        ge=1,
        le=4096,
        description="Concurrent requests to this SRM across all workers (each worker leases "
        "a share from the site limiter)",
    )
    max_operations: int = Field(
        10,
        ge=1,
        le=1000,
        description="SRM operations (reprotect, test, ...) running at once on this site, "
        "across all workers and runs",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for a local simulator)")
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA bundle file {value} does not exist")
        return value


def _read_secret_file(path: str, variable: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read secret file {path!r} ({exc.strerror})") from exc


def _resolve_secret_files(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Turn ``password_file``/``remote_password_file`` keys into the secret values."""
    out = dict(raw)
    for field in SECRET_FIELDS:
        file_key = f"{field}_file"
        if file_key in out:
            out[field] = _read_secret_file(str(out.pop(file_key)), f"{where}.{file_key}")
    return out


def _site_error(exc: ValidationError, naming: dict[str, str], where: str) -> ConfigError:
    """Name the variable behind each pydantic error, never echoing the input value."""
    problems = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        variable = naming.get(field, f"{where}.{field}")
        reason = "is required but not set" if err["type"] == "missing" else err["msg"]
        problems.append(f"{variable} {reason}")
    return ConfigError("invalid SRM site configuration: " + "; ".join(problems))


def _single_site_from_env(env: dict[str, str]) -> SrmSiteSettings | None:
    raw: dict[str, Any] = {}
    for variable, field in SINGLE_SITE_ENV.items():
        if env.get(variable, "") != "":
            raw[field] = env[variable]
    for field in SECRET_FIELDS:
        variable = f"SRMFLOW_SRM_{field.upper()}_FILE"
        if env.get(variable) and field not in raw:
            raw[field] = _read_secret_file(env[variable], variable)
    if not raw:
        return None
    naming = {field: variable for variable, field in SINGLE_SITE_ENV.items()}
    try:
        return SrmSiteSettings(name=DEFAULT_SITE, **raw)
    except ValidationError as exc:
        raise _site_error(exc, naming, "SRMFLOW_SRM") from None


def _sites_from_mapping(data: Any, where: str) -> dict[str, SrmSiteSettings]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be an object keyed by site name, e.g. {{'prod': {{...}}}}")
    sites: dict[str, SrmSiteSettings] = {}
    for name, raw in data.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}.{name} must be an object of site settings")
        resolved = _resolve_secret_files(raw, f"{where}.{name}")
        try:
            sites[str(name)] = SrmSiteSettings(**{**resolved, "name": str(name)})
        except ValidationError as exc:
            raise _site_error(exc, {}, f"{where}.{name}") from None
    return sites


def _load_sites_file(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SRMFLOW_SITES_FILE: cannot read {path!r} ({exc.strerror})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"SRMFLOW_SITES_FILE: {path!r} is not valid YAML/JSON: {exc}") from exc


class Settings(BaseSettings):
    """Everything an srmflow process needs; build one per process with ``load_settings()``."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # Temporal connection: the standard variables every Temporal tool reads.
    temporal_address: str = Field(
        "localhost:7233", validation_alias="TEMPORAL_ADDRESS", description="Temporal frontend"
    )
    temporal_namespace: str = Field(
        "default", validation_alias="TEMPORAL_NAMESPACE", description="Temporal namespace"
    )
    temporal_api_key: SecretStr | None = Field(
        None, validation_alias="TEMPORAL_API_KEY", description="API key (Temporal Cloud)"
    )
    temporal_tls: bool | None = Field(
        None, validation_alias="TEMPORAL_TLS", description="Force TLS on/off (default: auto)"
    )
    temporal_tls_client_cert_path: Path | None = Field(
        None, validation_alias="TEMPORAL_TLS_CLIENT_CERT_PATH", description="mTLS client cert"
    )
    temporal_tls_client_key_path: Path | None = Field(
        None, validation_alias="TEMPORAL_TLS_CLIENT_KEY_PATH", description="mTLS client key"
    )
    temporal_tls_server_ca_cert_path: Path | None = Field(
        None, validation_alias="TEMPORAL_TLS_SERVER_CA_CERT_PATH", description="Server CA cert"
    )
    temporal_tls_server_name: str | None = Field(
        None, validation_alias="TEMPORAL_TLS_SERVER_NAME", description="TLS SNI override"
    )
    task_queue: str = Field(
        "srmflow", validation_alias="SRMFLOW_TASK_QUEUE", description="Temporal task queue"
    )

    # Optional payload encryption (AES-GCM key ring "keyid:base64key,...", first is current).
    encryption_keys: SecretStr | None = Field(
        None,
        validation_alias="SRMFLOW_ENCRYPTION_KEYS",
        description="Payload encryption key ring keyid:base64key,... (first encrypts)",
    )
    encryption_keys_file: Path | None = Field(
        None,
        validation_alias="SRMFLOW_ENCRYPTION_KEYS_FILE",
        description="File holding SRMFLOW_ENCRYPTION_KEYS (secrets)",
    )

    # Signing secret of drill/run webhooks (HMAC-SHA256); the worker holds it, never history.
    webhook_secret: SecretStr | None = Field(
        None,
        validation_alias="SRMFLOW_WEBHOOK_SECRET",
        description="HMAC-SHA256 key signing webhook notifications",
    )

    # Logging and worker.
    log_level: str = Field("INFO", validation_alias="SRMFLOW_LOG_LEVEL", description="Log level")
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias="SRMFLOW_LOG_FORMAT", description="json, console or auto (tty)"
    )
    metrics_bind: str | None = Field(
        None,
        validation_alias="SRMFLOW_METRICS_BIND",
        description="host:port for the worker's Prometheus endpoint (off when unset)",
    )
    # Exporter settings are the standard OTEL_* variables, which the OpenTelemetry SDK reads.
    tracing: Literal["off", "otlp", "console"] = Field(
        "off",
        validation_alias="SRMFLOW_TRACING",
        description="OpenTelemetry tracing: off, otlp (to OTEL_EXPORTER_OTLP_ENDPOINT) or "
        "console (stderr); needs pip install 'srmflow[otel]'",
    )
    max_concurrent_activities: int = Field(
        200, ge=1, validation_alias="SRMFLOW_MAX_CONCURRENT_ACTIVITIES", description="Per worker"
    )
    max_concurrent_workflow_tasks: int = Field(
        100,
        ge=1,
        validation_alias="SRMFLOW_MAX_CONCURRENT_WORKFLOW_TASKS",
        description="Per worker",
    )
    # A plan spends nearly all its time waiting on its SRM task, cached but idle (about
    # 130 KiB each): the cache needs room for the plans active at once, not for every plan
    # in flight. An evicted plan replays its ~40 events once, when its task ends.
    max_cached_workflows: int = Field(
        500,
        ge=0,
        validation_alias="SRMFLOW_MAX_CACHED_WORKFLOWS",
        description="Workflows kept in memory between their tasks, per worker; past it the "
        "least recently active plan is evicted and replayed from history at its next step",
    )
    sticky_queue_timeout_seconds: float = Field(
        10.0,
        gt=0,
        validation_alias="SRMFLOW_STICKY_QUEUE_TIMEOUT_SECONDS",
        description="How long a workflow task waits for the worker that cached it (lost "
        "worker -> another takes over after this)",
    )
    graceful_shutdown_seconds: float = Field(
        90.0,
        gt=0,
        validation_alias="SRMFLOW_GRACEFUL_SHUTDOWN_SECONDS",
        description="Activity drain time on SIGTERM (longer than the heartbeat timeout)",
    )

    # SRM sites: filled by load_settings() from SRMFLOW_SRM_*, SRMFLOW_SITES or SRMFLOW_SITES_FILE.
    sites: dict[str, SrmSiteSettings] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _check_tls_pair(self) -> Settings:
        cert, key = self.temporal_tls_client_cert_path, self.temporal_tls_client_key_path
        if (cert is None) != (key is None):
            raise ValueError(
                "TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH go together"
            )
        return self

    def site(self, name: str = DEFAULT_SITE) -> SrmSiteSettings:
        """The named SRM site, or a ConfigError telling how to configure it."""
        if name in self.sites:
            return self.sites[name]
        if not self.sites:
            raise ConfigError(
                "no SRM site is configured: set SRMFLOW_SRM_URL, SRMFLOW_SRM_USERNAME, "
                "SRMFLOW_SRM_PASSWORD, SRMFLOW_SRM_REMOTE_USERNAME and "
                "SRMFLOW_SRM_REMOTE_PASSWORD (or SRMFLOW_SITES / SRMFLOW_SITES_FILE)"
            )
        known = ", ".join(sorted(self.sites))
        raise ConfigError(f"unknown SRM site {name!r}; configured sites: {known}")


def load_settings(env: dict[str, str] | None = None, *, require_site: bool = False) -> Settings:
    """Build Settings from the environment, raising ConfigError that names the bad variable."""
    env = dict(os.environ if env is None else env)
    try:
        settings = Settings(**_settings_kwargs(env))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            variable = str(err["loc"][0]) if err["loc"] else "settings"
            reason = "is required but not set" if err["type"] == "missing" else err["msg"]
            problems.append(f"{variable} {reason}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None

    sites: dict[str, SrmSiteSettings] = {}
    if env.get("SRMFLOW_SITES"):
        try:
            data = json.loads(env["SRMFLOW_SITES"])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"SRMFLOW_SITES is not valid JSON: {exc.msg}") from None
        sites.update(_sites_from_mapping(data, "SRMFLOW_SITES"))
    if env.get("SRMFLOW_SITES_FILE"):
        data = _load_sites_file(env["SRMFLOW_SITES_FILE"])
        sites.update(_sites_from_mapping(data, "SRMFLOW_SITES_FILE"))
    single = _single_site_from_env(env)
    if single is not None:
        sites[DEFAULT_SITE] = single
    settings.sites = sites
    if require_site and not sites:
        settings.site()
    return settings


def _settings_kwargs(env: dict[str, str]) -> dict[str, Any]:
    """Pick the Settings fields out of ``env`` by their variable names (empty means unset)."""
    out: dict[str, Any] = {}
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str) and env.get(alias, "") != "":
            out[alias] = env[alias]
    return out
