"""Activities of the bulk run: resolve a plan selection, await a plan workflow started elsewhere."""

from __future__ import annotations

import asyncio
import fnmatch

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.errors import to_application_error
from activities.srm import SrmActivities
from srmflow.srm.errors import SrmError
from srmflow.srm.models import PlanStatus, RecoveryPlan
from workflows.bulk_models import AwaitWorkflowInput, PlanRef, Selection, SelectionInput
from workflows.models import ReprotectOutcome, ReprotectPlanResult

log = structlog.get_logger(__name__)

# Statuses that mean "this plan needs a reprotect" for --all-recovered; a running reprotect is
# included so that the run adopts and reports it.
NEEDS_REPROTECT = frozenset(
    {
        PlanStatus.RECOVERY_COMPLETE,
        PlanStatus.INCOMPLETE_REPROTECT,
        PlanStatus.PARTIAL_REPROTECT,
        PlanStatus.REPROTECT_INTERRUPTED,
        PlanStatus.REPROTECT_IN_PROGRESS,
    }
)
AWAIT_HEARTBEAT_SECONDS = 20.0
# Its plans' workflows skip the per-plan pairing check (ReprotectPlanInput.pairing_checked),
# so resolve_selection checks the pairing once for such a run; drills keep checking per plan.
PAIRING_CHECKED_BY = frozenset({"BulkReprotectWorkflow"})


class BulkActivities:
    """Bulk-run activities; reuse the SRM clients of SrmActivities and the worker's client."""

    def __init__(self, srm: SrmActivities, temporal: Client) -> None:
        self._srm = srm
        self._temporal = temporal

    @activity.defn
    async def resolve_selection(self, inp: SelectionInput) -> Selection:
        """Turn ids, a name glob or "all recovered" into plans with their protection groups.

        For a bulk reprotect run it also checks the pairing's health and the remote session,
        once for every plan of the run (PairingUnhealthy fails the run before any plan starts).
        """
        client = self._srm.client(inp.site)
        try:
            pairing_id = await self._srm.resolve_pairing(client, inp.pairing_id)
            if activity.info().workflow_type in PAIRING_CHECKED_BY:
                issues = await self._srm.check_pairing_health(client, pairing_id)
                if issues:
                    log.warning("pairing_issues", pairing_id=pairing_id, issues=issues)
            plans = await client.list_plans(pairing_id)
            chosen, unknown = _select(plans, inp)
            groups = await asyncio.gather(
                *(client.list_plan_groups(pairing_id, plan.id) for plan in chosen)
            )
        except SrmError as exc:
            raise to_application_error(exc, "resolve selection") from exc
        refs = [
            PlanRef(
                plan_id=plan.id,
                plan_name=plan.name,
                status=plan.status,
                group_ids=sorted(g.id for g in plan_groups if g.id),
            )
            for plan, plan_groups in zip(chosen, groups, strict=True)
        ]
        log.info("selection_resolved", plans=len(refs), unknown=len(unknown), site=inp.site)
        return Selection(pairing_id=pairing_id, plans=refs, unknown_plan_ids=unknown)

    @activity.defn
    async def await_reprotect_workflow(self, inp: AwaitWorkflowInput) -> ReprotectPlanResult:
        """Wait for a reprotect workflow that another run or user started (no second start)."""
        handle = self._temporal.get_workflow_handle(
            inp.workflow_id, result_type=ReprotectPlanResult
        )
        waiter = asyncio.ensure_future(handle.result())
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=AWAIT_HEARTBEAT_SECONDS)
                if done:
                    return waiter.result()
                activity.heartbeat(inp.workflow_id)
        except WorkflowFailureError as exc:
            cause = exc.cause
            return ReprotectPlanResult(
                plan_id=inp.workflow_id.rsplit("/", 1)[-1],
                outcome=ReprotectOutcome.FAILED,
                reason=f"the plan's workflow failed: {getattr(cause, 'message', cause)}",
                error_type=getattr(cause, "type", None),
            )
        except asyncio.CancelledError:
            waiter.cancel()
            raise
        finally:
            waiter.cancel()


def _select(plans: list[RecoveryPlan], inp: SelectionInput) -> tuple[list[RecoveryPlan], list[str]]:
    if inp.plan_ids:
        by_id = {plan.id: plan for plan in plans}
        wanted = list(dict.fromkeys(inp.plan_ids))
        return [by_id[i] for i in wanted if i in by_id], [i for i in wanted if i not in by_id]
    if inp.plan_name_glob:
        pattern = inp.plan_name_glob
        chosen = [p for p in plans if fnmatch.fnmatchcase(p.name, pattern)]
        return sorted(chosen, key=lambda p: p.name), []
    if inp.all_recovered:
        chosen = [p for p in plans if p.status in NEEDS_REPROTECT]
        return sorted(chosen, key=lambda p: p.name), []
    raise ApplicationError("empty selection", type="EmptySelection", non_retryable=True)
