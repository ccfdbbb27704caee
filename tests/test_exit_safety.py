"""Entry points exit with their own code, never with the interpreter-shutdown crash.

temporalio can abort during interpreter finalisation (sdk-python issue 300, exit 134/139) in
a process that used a client. Every entry point leaves through srmflow.entry.hard_exit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRMFLOW = str(Path(sys.executable).parent / "srmflow")


def test_cli_that_used_a_temporal_client_exits_zero_ten_times(
    temporal_address: str, subprocess_env: dict[str, str]
) -> None:
    env = {**subprocess_env, "TEMPORAL_ADDRESS": temporal_address}
    codes = []
    for _ in range(10):
        done = subprocess.run(
            [SRMFLOW, "doctor", "--skip-srm", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        codes.append(done.returncode)
        assert '"ok": true' in done.stdout, done.stdout + done.stderr
    assert codes == [0] * 10


def test_cli_failure_code_is_kept(subprocess_env: dict[str, str]) -> None:
    # Nothing listens on port 1: the check fails, and the exit code says so (not a crash code).
    env = {**subprocess_env, "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    done = subprocess.run(
        [SRMFLOW, "doctor", "--skip-srm", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert '"ok": false' in done.stdout


def test_bad_configuration_exits_2_naming_the_variable(subprocess_env: dict[str, str]) -> None:
    env = {**subprocess_env, "SRMFLOW_LOG_FORMAT": "xml"}
    done = subprocess.run(
        [SRMFLOW, "doctor", "--skip-srm"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "SRMFLOW_LOG_FORMAT" in done.stderr


def test_pytest_session_that_used_a_client_exits_zero(
    tmp_path: Path, temporal_address: str, subprocess_env: dict[str, str]
) -> None:
    inner = tmp_path / "test_inner.py"
    inner.write_text(
        textwrap.dedent(
            f"""
            from temporalio.client import Client

            async def test_connect():
                client = await Client.connect({temporal_address!r})
                assert await client.count_workflows() is not None
            """
        )
    )
    # The inner session uses this project's conftest (and its hard exit) via --rootdir/-p.
    for _ in range(3):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "tests.conftest",
                "-o",
                "asyncio_mode=auto",
                str(inner),
            ],
            cwd=ROOT,
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "1 passed" in done.stdout
