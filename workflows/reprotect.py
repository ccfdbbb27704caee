"""ReprotectPlanWorkflow: reprotect one SRM recovery plan exactly once, durably.

Steps: precheck -> queued for one of the site's SRM operation slots -> start (start-or-adopt)
-> srm_task (one heartbeating activity follows the SRM task) -> verify. The script is
``workflows/reprotect_script.py``; this module only declares the workflow, its run method and
its query, so that the copy the sandbox loads for every run stays small.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import ReprotectPlanInput, ReprotectPlanResult, ReprotectProgress
    from workflows.reprotect_script import ReprotectScript


@workflow.defn
class ReprotectPlanWorkflow(ReprotectScript):
    """Reprotect one recovery plan: precheck, start or adopt, wait, verify."""

    @workflow.run
    async def run(self, inp: ReprotectPlanInput) -> ReprotectPlanResult:
        """Run the steps and return how the plan ended."""
        return await self.execute(inp)

    @workflow.query
    def progress(self) -> ReprotectProgress:
        """Current step, SRM task, last known task progress and step timings."""
        return self.current_progress()
