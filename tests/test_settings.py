"""Settings: the single-site variables, several sites, secret files, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from srmflow.settings import ConfigError, load_settings

SITE_ENV = {
    "SRMFLOW_SRM_URL": "https://srm.example/api/rest/srm/v2/",
    "SRMFLOW_SRM_USERNAME": "administrator@vsphere.local",
    "SRMFLOW_SRM_PASSWORD": "s3cret-local",
    "SRMFLOW_SRM_REMOTE_USERNAME": "administrator@remote.local",
    "SRMFLOW_SRM_REMOTE_PASSWORD": "s3cret-remote",
}


def test_single_site_from_plain_variables() -> None:
    settings = load_settings({**SITE_ENV, "SRMFLOW_SRM_VERIFY_TLS": "false"})
    site = settings.site()
    assert site.name == "default"
    assert site.url == "https://srm.example/api/rest/srm/v2"
    assert site.password.get_secret_value() == "s3cret-local"
    assert site.verify_tls is False
    assert settings.task_queue == "srmflow"
    assert settings.temporal_address == "localhost:7233"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in repr(site)


def test_temporal_standard_variables() -> None:
    settings = load_settings(
        {
            "TEMPORAL_ADDRESS": "tc.example:7233",
            "TEMPORAL_NAMESPACE": "dr.acct",
            "TEMPORAL_API_KEY": "key-123",
            "SRMFLOW_TASK_QUEUE": "dr",
        }
    )
    assert settings.temporal_address == "tc.example:7233"
    assert settings.temporal_namespace == "dr.acct"
    assert settings.temporal_api_key is not None
    assert settings.temporal_api_key.get_secret_value() == "key-123"
    assert settings.task_queue == "dr"


def test_password_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    env = {k: v for k, v in SITE_ENV.items() if "PASSWORD" not in k}
    env["SRMFLOW_SRM_PASSWORD_FILE"] = str(secret)
    env["SRMFLOW_SRM_REMOTE_PASSWORD_FILE"] = str(secret)
    site = load_settings(env).site()
    assert site.password.get_secret_value() == "from-file"
    assert site.remote_password.get_secret_value() == "from-file"


def test_several_sites_from_json_and_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("east-pw")
    sites_file = tmp_path / "sites.yaml"
    sites_file.write_text(
        "east:\n"
        "  url: https://srm-east.example/api/rest/srm/v2\n"
        "  username: u\n"
        f"  password_file: {secret}\n"
        "  remote_username: r\n"
        f"  remote_password_file: {secret}\n"
        "  max_in_flight: 4\n"
    )
    west = {
        "west": {
            "url": "https://srm-west.example/api/rest/srm/v2",
            "username": "u",
            "password": "p",
            "remote_username": "r",
            "remote_password": "q",
        }
    }
    settings = load_settings(
        {"SRMFLOW_SITES_FILE": str(sites_file), "SRMFLOW_SITES": json.dumps(west)}
    )
    assert sorted(settings.sites) == ["east", "west"]
    assert settings.site("east").password.get_secret_value() == "east-pw"
    assert settings.site("east").max_in_flight == 4
    with pytest.raises(
        ConfigError, match=r"unknown SRM site 'north'; configured sites: east, west"
    ):
        settings.site("north")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({**SITE_ENV, "SRMFLOW_SRM_USERNAME": ""}, r"SRMFLOW_SRM_USERNAME is required"),
        ({**SITE_ENV, "SRMFLOW_SRM_URL": "srm.example"}, r"SRMFLOW_SRM_URL .*https://"),
        ({**SITE_ENV, "SRMFLOW_SRM_MAX_IN_FLIGHT": "lots"}, r"SRMFLOW_SRM_MAX_IN_FLIGHT"),
        ({**SITE_ENV, "SRMFLOW_SRM_CA_BUNDLE": "/nonexistent/ca.pem"}, r"SRMFLOW_SRM_CA_BUNDLE"),
        ({"SRMFLOW_SITES": "{not json"}, r"SRMFLOW_SITES is not valid JSON"),
        (
            {"SRMFLOW_SITES": '{"a": {"url": "https://x"}}'},
            r"SRMFLOW_SITES\.a\.username is required",
        ),
        ({"SRMFLOW_SITES_FILE": "/nonexistent.yaml"}, r"SRMFLOW_SITES_FILE: cannot read"),
        ({"SRMFLOW_MAX_CONCURRENT_ACTIVITIES": "0"}, r"SRMFLOW_MAX_CONCURRENT_ACTIVITIES"),
        ({"SRMFLOW_LOG_FORMAT": "xml"}, r"SRMFLOW_LOG_FORMAT"),
        ({"TEMPORAL_TLS_CLIENT_CERT_PATH": "/c.pem"}, r"TEMPORAL_TLS_CLIENT_KEY_PATH"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    message = str(info.value)
    assert info.match(expected)
    # The password was set in most cases: it must never be echoed back.
    assert "s3cret" not in message


def test_password_file_takes_effect_only_when_password_unset(tmp_path: Path) -> None:
    # An explicit password wins; a broken *_FILE next to it is not read.
    env = {**SITE_ENV, "SRMFLOW_SRM_PASSWORD_FILE": str(tmp_path / "missing")}
    assert load_settings(env).site().password.get_secret_value() == "s3cret-local"


def test_missing_site_is_explained_when_required() -> None:
    with pytest.raises(ConfigError, match="SRMFLOW_SRM_URL"):
        load_settings({}, require_site=True)


def test_encryption_keys_from_variable_or_file(tmp_path: Path) -> None:
    from srmflow.codec import new_key
    from srmflow.temporal import payload_codec

    assert payload_codec(load_settings({})) is None
    ring = f"{new_key('k2')},{new_key('k1')}"
    codec = payload_codec(load_settings({"SRMFLOW_ENCRYPTION_KEYS": ring}))
    assert codec is not None
    assert codec.current_key_id == "k2"
    keys_file = tmp_path / "keys"
    keys_file.write_text(ring + "\n")
    codec = payload_codec(load_settings({"SRMFLOW_ENCRYPTION_KEYS_FILE": str(keys_file)}))
    assert codec is not None
    assert list(codec.key_ids) == ["k2", "k1"]
    with pytest.raises(ConfigError, match="SRMFLOW_ENCRYPTION_KEYS: entry 1"):
        payload_codec(load_settings({"SRMFLOW_ENCRYPTION_KEYS": "garbage"}))
