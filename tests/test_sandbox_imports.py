"""What the workflow sandbox loads afresh for every run.

The sandbox imports a workflow's own module again for each run it executes; anything else that
module imports inside the sandbox is loaded again too, and every cached run keeps its copy
(tens of KiB a module, per plan in flight: docs/benchmarks.md). srmflow passes its
deterministic helper modules through instead. The trap this guards against: ``from workflows
import plan_steps`` inside ``imports_passed_through()`` still loads ``plan_steps`` afresh,
because the ``workflows`` package itself is loaded afresh and Python fetches the submodule
through the package without asking the sandbox. For the same reason the reprotect workflow's
module only declares the workflow; its script lives in a passed-through module.
"""

from __future__ import annotations

import ast
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from temporalio.client import Client

from tests.reprotect_support import plan_ids, run, sim_worker, unique_site
from tests.simfixture import MakeSim
from workflows.models import ReprotectOutcome, ReprotectPlanInput

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
_OURS = {"workflows", "activities", "srmflow", "worker"}

# Modules of ours that the sandbox may load afresh for a plan workflow run: its own module and
# the package holding it.
FRESH_PER_RUN = {"workflows", "workflows.reprotect"}

# Passed-through helpers run outside the sandbox's checks, so they may import only what
# workflow code may use deterministically, and read the time only through workflow.now().
PASSED_THROUGH_HELPERS = ("plan_steps.py", "policies.py", "limiter.py", "reprotect_script.py")
# The reprotect script names its activities by method: it may import their class, never call it.
ACTIVITY_REFERENCES = {"reprotect_script.py": ("activities.srm", "SrmActivities")}
CLOCK_READS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}
HELPER_IMPORTS_ALLOWED = (
    "__future__",
    "asyncio",
    "collections.abc",
    "contextlib",
    "datetime",
    "typing",
    "temporalio",
    "workflows",
)

_imports: list[str] | None = None


def _record_module_runs(frame: FrameType, event: str, arg: Any) -> None:
    """Profile hook of the worker's threads: note every module body that executes."""
    code = frame.f_code
    if _imports is None or event != "call" or code.co_name != "<module>":
        return
    if code.co_filename.endswith(".py"):  # a module body, not the sandbox's own exec'd text
        _imports.append(str(frame.f_globals.get("__name__")))


async def test_a_plan_run_reloads_only_its_own_module(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    # The worker creates workflow instances on this thread and activates them on its own
    # threads, started after this.
    sys.setprofile(_record_module_runs)
    threading.setprofile(_record_module_runs)
    try:
        await _run_two_plans_recording_the_second(client, task_queue, make_sim)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]


async def _run_two_plans_recording_the_second(
    client: Client, task_queue: str, make_sim: MakeSim
) -> None:
    global _imports
    sim = await make_sim(plans=2)
    site = unique_site()
    first, second = (
        ReprotectPlanInput(site=site, plan_id=plan, poll_interval_seconds=1)
        for plan in plan_ids(sim)
    )
    async with sim_worker(client, task_queue, sim, site):
        # The first plan starts the site limiter, which stays in the worker's cache: the
        # second plan's run is then the only one loading modules.
        await run(client, task_queue, first, sim.pairing_id)
        _imports = []
        try:
            result = await run(client, task_queue, second, sim.pairing_id)
            loaded = {name for name in _imports if name.split(".")[0] in _OURS}
        finally:
            _imports = None
    assert result.outcome is ReprotectOutcome.REPROTECTED, result.reason
    # The run did execute in a sandbox that loaded its module afresh (the hook sees it)...
    assert "workflows.reprotect" in loaded
    # ...and nothing else of ours.
    assert loaded <= FRESH_PER_RUN, sorted(loaded - FRESH_PER_RUN)


def _workflow_modules() -> list[Path]:
    return sorted(p for p in WORKFLOWS.glob("*.py") if "@workflow.defn" in p.read_text())


def _passthrough_blocks(tree: ast.Module) -> list[ast.With]:
    return [
        node
        for node in tree.body
        if isinstance(node, ast.With)
        and "imports_passed_through" in ast.unparse(node.items[0].context_expr)
    ]


@pytest.mark.parametrize("path", _workflow_modules(), ids=lambda p: p.name)
def test_workflow_modules_pass_our_modules_through_by_full_name(path: Path) -> None:
    tree = ast.parse(path.read_text())
    blocks = _passthrough_blocks(tree)
    inside = {id(node) for block in blocks for node in ast.walk(block)}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _OURS:
            if id(node) not in inside:
                problems.append(f"line {node.lineno}: 'from {node.module} import' is sandboxed")
            elif node.module in _OURS:
                names = ", ".join(a.name for a in node.names)
                problems.append(
                    f"line {node.lineno}: 'from {node.module} import {names}' loads the "
                    f"submodule afresh per run; write 'import {node.module}.<name> as <name>'"
                )
        if isinstance(node, ast.Import) and id(node) not in inside:
            ours = [a.name for a in node.names if a.name.split(".")[0] in _OURS]
            problems.extend(f"line {node.lineno}: 'import {n}' is sandboxed" for n in ours)
    assert not problems, problems


@pytest.mark.parametrize("name", PASSED_THROUGH_HELPERS)
def test_passed_through_helpers_import_only_deterministic_modules(name: str) -> None:
    tree = ast.parse((WORKFLOWS / name).read_text())
    imported = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    imported += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    allowed_here = (*HELPER_IMPORTS_ALLOWED, *ACTIVITY_REFERENCES.get(name, ())[:1])
    roots = [m for m in imported if not m.startswith(allowed_here)]
    assert not roots, f"{name} imports {roots}: not allowed in code that skips the sandbox"


@pytest.mark.parametrize("name", PASSED_THROUGH_HELPERS)
def test_passed_through_helpers_read_no_clock_and_run_no_activity_code(name: str) -> None:
    tree = ast.parse((WORKFLOWS / name).read_text())
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = ast.unparse(node.func.value)
        if node.func.attr in CLOCK_READS and owner != "workflow":
            problems.append(f"line {node.lineno}: {ast.unparse(node.func)}() reads a clock")
        if name in ACTIVITY_REFERENCES and owner == ACTIVITY_REFERENCES[name][1]:
            problems.append(f"line {node.lineno}: {ast.unparse(node.func)}() runs activity code")
    assert not problems, f"{name}: {problems}; use workflow.now() and schedule activities"
