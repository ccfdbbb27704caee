"""Payload encryption: AES-GCM codec unit tests and a run on the real dev server."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.common import RetryPolicy
from temporalio.converter import DefaultFailureConverterWithEncodedAttributes
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

# The sandbox re-imports this module to run CodecTestWorkflow; the codec and its native
# cryptography backend are passed through instead of being imported a second time.
with workflow.unsafe.imports_passed_through():
    from srmflow.codec import (
        ENCODING,
        METADATA_KEY_ID,
        EncryptionCodec,
        PayloadDecryptionError,
        codec_from_keys,
        data_converter,
        main,
        new_key,
    )
    from srmflow.converter import DATA_CONVERTER
    from srmflow.settings import ConfigError

PLAN_NAME = "plan-SECRET-0042"
SRM_ERROR = "Failed to reverse replication for device lun-SECRET-99"
SECRETS = (PLAN_NAME, SRM_ERROR, "lun-SECRET-99")


def _b64(fill: int, size: int = 32) -> str:
    return base64.b64encode(bytes([fill]) * size).decode()


OLD = f"old:{_b64(1)}"
NEW = f"new:{_b64(2)}"
OLD_WRONG = f"old:{_b64(3)}"


class SecretPlanInput(BaseModel):
    """Test workflow input carrying a plan name that must not be stored in clear."""

    plan_name: str
    fail: bool = False


class SecretPlanResult(BaseModel):
    """Test workflow result echoing the plan name."""

    message: str


@activity.defn(name="codec_test_reprotect")
async def reprotect_stand_in(data: SecretPlanInput) -> SecretPlanResult:
    """Stand-in SRM activity: echoes the plan name or fails like SRM does."""
    if data.fail:
        raise ApplicationError(SRM_ERROR, type="SrmTaskFailed", non_retryable=True)
    return SecretPlanResult(message=f"reprotected {data.plan_name}")


@workflow.defn(name="CodecTestWorkflow")
class CodecTestWorkflow:
    """Runs the stand-in activity once and returns its result."""

    @workflow.run
    async def run(self, data: SecretPlanInput) -> SecretPlanResult:
        """Call the activity with the plan; an SRM failure fails the workflow."""
        return await workflow.execute_activity(
            reprotect_stand_in,
            data,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def _sealed(codec: EncryptionCodec, value: object) -> Payload:
    return (await data_converter(codec).encode([value]))[0]


# Unit tests -------------------------------------------------------------------------------------


async def test_round_trip_seals_payload_and_metadata() -> None:
    codec = codec_from_keys(NEW)
    payload = await _sealed(codec, SecretPlanInput(plan_name=PLAN_NAME))
    assert payload.metadata["encoding"] == ENCODING
    assert payload.metadata[METADATA_KEY_ID] == b"new"
    assert PLAN_NAME.encode() not in payload.SerializeToString()
    # The inner payload's metadata (json/plain) is sealed too.
    assert b"json/plain" not in payload.SerializeToString()
    [value] = await data_converter(codec).decode([payload], [SecretPlanInput])
    assert value == SecretPlanInput(plan_name=PLAN_NAME)


async def test_each_payload_gets_a_fresh_nonce() -> None:
    codec = codec_from_keys(NEW)
    first, second = await data_converter(codec).encode([PLAN_NAME, PLAN_NAME])
    assert first.data[:12] != second.data[:12]
    assert first.data != second.data


async def test_rotation_new_key_encodes_old_key_still_decodes() -> None:
    before = codec_from_keys(OLD)
    after = codec_from_keys(f"{NEW},{OLD}")
    old_payload = await _sealed(before, PLAN_NAME)
    new_payload = await _sealed(after, PLAN_NAME)
    assert after.current_key_id == "new"
    assert after.key_ids == ("new", "old")
    assert new_payload.metadata[METADATA_KEY_ID] == b"new"
    assert await data_converter(after).decode([old_payload, new_payload]) == [PLAN_NAME] * 2
    # A process still on the old ring names the key it lacks.
    with pytest.raises(PayloadDecryptionError) as info:
        await before.decode([new_payload])
    message = str(info.value)
    assert "'new'" in message
    assert "SRMFLOW_ENCRYPTION_KEYS" in message


async def test_wrong_key_is_a_clear_error_without_key_material() -> None:
    payload = await _sealed(codec_from_keys(OLD), SRM_ERROR)
    with pytest.raises(PayloadDecryptionError) as info:
        await codec_from_keys(OLD_WRONG).decode([payload])
    message = str(info.value)
    assert "configure the original key with id 'old' in SRMFLOW_ENCRYPTION_KEYS" in message
    for key in (_b64(1), _b64(3)):
        assert key not in message
    assert SRM_ERROR not in message


async def test_tampered_ciphertext_fails_authentication() -> None:
    codec = codec_from_keys(OLD)
    payload = await _sealed(codec, PLAN_NAME)
    data = bytearray(payload.data)
    data[-20] ^= 0x01
    tampered = Payload(metadata=payload.metadata, data=bytes(data))
    with pytest.raises(PayloadDecryptionError, match="altered"):
        await codec.decode([tampered])
    truncated = Payload(metadata=payload.metadata, data=payload.data[:10])
    with pytest.raises(PayloadDecryptionError, match="truncated"):
        await codec.decode([truncated])


async def test_key_id_is_authenticated() -> None:
    # Two ids holding the same key: relabelling a payload must still fail.
    codec = codec_from_keys(f"a:{_b64(7)},b:{_b64(7)}")
    payload = await _sealed(codec, PLAN_NAME)
    relabelled = Payload(metadata={**payload.metadata, METADATA_KEY_ID: b"b"}, data=payload.data)
    with pytest.raises(PayloadDecryptionError, match="'b'"):
        await codec.decode([relabelled])


async def test_unencrypted_payloads_pass_through() -> None:
    codec = codec_from_keys(OLD)
    plain = await DATA_CONVERTER.encode([SecretPlanInput(plan_name=PLAN_NAME), None])
    assert await codec.decode(plain) == plain
    values = await data_converter(codec).decode(plain, [SecretPlanInput, type(None)])
    assert values == [SecretPlanInput(plan_name=PLAN_NAME), None]


async def test_failure_message_and_stack_are_sealed() -> None:
    converter = data_converter(codec_from_keys(OLD))
    assert isinstance(converter.failure_converter, DefaultFailureConverterWithEncodedAttributes)
    try:
        raise ApplicationError(SRM_ERROR, {"plan": PLAN_NAME}, type="SrmTaskFailed")
    except ApplicationError as exc:
        failure = Failure()
        await converter.encode_failure(exc, failure)
    wire = failure.SerializeToString()
    for secret in SECRETS:
        assert secret.encode() not in wire
    assert failure.application_failure_info.type == "SrmTaskFailed"
    error = await converter.decode_failure(failure)
    assert isinstance(error, ApplicationError)
    assert error.message == SRM_ERROR
    assert error.details == ({"plan": PLAN_NAME},)


def test_no_codec_means_the_plain_pydantic_converter() -> None:
    assert data_converter(None) is DATA_CONVERTER


# Prints the cryptography modules loaded after a worker's imports, before and after a codec.
_LOADED = """
import os, sys
import srmflow.cli.worker, worker
from srmflow.codec import codec_from_keys, data_converter, new_key
def loaded():
    return len([m for m in sys.modules if m.split(".")[0] == "cryptography"])
data_converter(None)
print(loaded(), end=" ")
codec_from_keys(new_key("k1"))
print(loaded(), flush=True)
os._exit(0)
"""


def test_a_worker_without_encryption_never_loads_cryptography() -> None:
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run(
        [sys.executable, "-c", _LOADED], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    without_keys, with_keys = map(int, run.stdout.split())
    assert without_keys == 0
    assert with_keys > 0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", "is empty"),
        ("  ", "is empty"),
        ("k1", "entry 1 is not keyid:base64key"),
        (f"{OLD},k2", "entry 2 is not keyid:base64key"),
        (f"{OLD},", "entry 2 is not keyid:base64key"),
        ("k1:", "entry 1 is not keyid:base64key"),
        (f":{_b64(1)}", "entry 1 is not keyid:base64key"),
        ("k1:not*base64!", "entry 1 (key id 'k1') is not valid base64"),
        (f"k1:{_b64(1, 16)}", "entry 1 (key id 'k1') must be a 32-byte key"),
        (f"{OLD},{NEW},old:{_b64(4)}", "entry 3 repeats key id 'old'"),
        (f"bad id:{_b64(1)}", "entry 1 has an invalid key id"),
    ],
)
def test_malformed_spec_names_the_entry_not_the_key(spec: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        codec_from_keys(spec)
    message = str(info.value)
    assert expected in message
    assert message.startswith("SRMFLOW_ENCRYPTION_KEYS")
    for key in (_b64(1), _b64(1, 16), _b64(2), _b64(4), "not*base64!"):
        assert key not in message


def test_spec_accepts_spaces_and_url_safe_base64_and_names_its_source() -> None:
    key = bytes(range(256))[-32:]
    codec = codec_from_keys(f" k1 : {base64.urlsafe_b64encode(key).decode()} , {OLD} ")
    assert codec.key_ids == ("k1", "old")
    with pytest.raises(ConfigError, match=r"^SRMFLOW_ENCRYPTION_KEYS_FILE: entry 1"):
        codec_from_keys("nope", source="SRMFLOW_ENCRYPTION_KEYS_FILE")
    assert "old" in repr(codec)
    assert _b64(1) not in repr(codec)


async def test_new_key_cli_prints_a_usable_entry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-key", "k2030"]) == 0
    entry = capsys.readouterr().out.strip()
    assert entry.startswith("k2030:")
    codec = codec_from_keys(entry)
    assert await codec.decode(await codec.encode([Payload(data=b"x")])) == [Payload(data=b"x")]
    generated = new_key()
    assert codec_from_keys(generated).current_key_id == generated.split(":")[0]
    assert new_key() != generated
    assert main(["new-key", "bad id"]) == 2
    assert main([]) == 2
    assert "invalid key id" in capsys.readouterr().err


# Real Temporal dev server -----------------------------------------------------------------------


def _history_leaks(history: WorkflowHistory) -> list[str]:
    """Secrets found in the exported JSON or anywhere in the raw event bytes (payload data)."""
    exported = history.to_json()
    raw = b"".join(event.SerializeToString() for event in history.events)
    return [s for s in SECRETS if s in exported or s.encode() in raw]


async def _connect(dev_env: WorkflowEnvironment, keys: str) -> Client:
    return await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        data_converter=data_converter(codec_from_keys(keys)),
    )


async def test_encrypted_history_holds_no_plan_name_or_srm_error(
    dev_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = await _connect(dev_env, f"{NEW},{OLD}")
    run = uuid.uuid4().hex[:8]
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[CodecTestWorkflow],
        activities=[reprotect_stand_in],
    ):
        ok, failed = await asyncio.gather(
            *(
                client.start_workflow(
                    CodecTestWorkflow.run,
                    SecretPlanInput(plan_name=PLAN_NAME, fail=fail),
                    id=f"codec-test/{run}/{'fail' if fail else 'ok'}",
                    task_queue=task_queue,
                )
                for fail in (False, True)
            )
        )
        assert await ok.result() == SecretPlanResult(message=f"reprotected {PLAN_NAME}")
        with pytest.raises(WorkflowFailureError) as info:
            await failed.result()

    activity_error = info.value.cause
    assert isinstance(activity_error, ActivityError)
    srm_error = activity_error.cause
    assert isinstance(srm_error, ApplicationError)
    assert srm_error.message == SRM_ERROR
    assert srm_error.type == "SrmTaskFailed"

    for handle in (ok, failed):
        history = await handle.fetch_history()
        assert _history_leaks(history) == []
        assert base64.b64encode(ENCODING).decode() in history.to_json()

    # A process with the right key id but the wrong key, or without the key id, says what to fix.
    wrong = await _connect(dev_env, OLD_WRONG.replace("old:", "new:"))
    with pytest.raises(PayloadDecryptionError, match="configure the original key with id 'new'"):
        await wrong.get_workflow_handle(ok.id).result()
    missing = await _connect(dev_env, OLD)
    with pytest.raises(PayloadDecryptionError, match="configure the key with id 'new'"):
        await missing.get_workflow_handle(failed.id).result()


async def test_leak_check_sees_clear_payloads(
    dev_env: WorkflowEnvironment, client: Client, task_queue: str
) -> None:
    # Control: without encryption the same check finds the plan name in the history.
    handle = await client.start_workflow(
        CodecTestWorkflow.run,
        SecretPlanInput(plan_name=PLAN_NAME),
        id=f"codec-test/{uuid.uuid4().hex[:8]}/plain",
        task_queue=task_queue,
    )
    try:
        assert _history_leaks(await handle.fetch_history()) == [PLAN_NAME]
    finally:
        await handle.terminate()
