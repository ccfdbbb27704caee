"""SRM wire models: the JSON shapes of ``srm-api-v2.json`` that srmflow reads.

Status fields are plain ``str`` so that a value added by a future SRM release never breaks
parsing; the ``StrEnum`` classes below exist for comparisons (``plan.status ==
PlanStatus.READY_STATE``). Unknown fields are kept (``extra="allow"``) for the same reason.
These models never reach workflow history: activities translate them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class PlanStatus(StrEnum):
    """``RecoveryPlanInfo.status``: all 27 values of the spec."""

    READY_STATE = "READY_STATE"
    NO_PROTECTION_GROUPS = "NO_PROTECTION_GROUPS"
    DIRECTION_ERROR = "DIRECTION_ERROR"
    DELETING = "DELETING"
    WAITING_FOR_USER_INPUT = "WAITING_FOR_USER_INPUT"
    CANCEL_IN_PROGRESS = "CANCEL_IN_PROGRESS"
    TEST_IN_PROGRESS = "TEST_IN_PROGRESS"
    PROTECTION_GROUPS_IN_USE = "PROTECTION_GROUPS_IN_USE"
    TEST_COMPLETE = "TEST_COMPLETE"
    TEST_INTERRUPTED = "TEST_INTERRUPTED"
    CLEANUP_IN_PROGRESS = "CLEANUP_IN_PROGRESS"
    CLEANUP_INCOMPLETE = "CLEANUP_INCOMPLETE"
    CLEANUP_INTERRUPTED = "CLEANUP_INTERRUPTED"
    RECOVERY_IN_PROGRESS = "RECOVERY_IN_PROGRESS"
    RECOVERY_COMPLETE = "RECOVERY_COMPLETE"
    RECOVERY_STARTED = "RECOVERY_STARTED"
    PARTIAL_RECOVERY = "PARTIAL_RECOVERY"
    RECOVERY_SPLIT_BRAIN = "RECOVERY_SPLIT_BRAIN"
    DISASTER_RECOVERY_COMPLETE = "DISASTER_RECOVERY_COMPLETE"
    INCOMPLETE_RECOVERY = "INCOMPLETE_RECOVERY"
    RECOVERY_INTERRUPTED = "RECOVERY_INTERRUPTED"
    REPROTECT_IN_PROGRESS = "REPROTECT_IN_PROGRESS"
    INCOMPLETE_REPROTECT = "INCOMPLETE_REPROTECT"
    PARTIAL_REPROTECT = "PARTIAL_REPROTECT"
    REPROTECT_INTERRUPTED = "REPROTECT_INTERRUPTED"
    UNKNOWN_STATE = "UNKNOWN_STATE"
    SYNC_CONFLICT = "SYNC_CONFLICT"


class TaskStatus(StrEnum):
    """``Task.status``; failure is ``ERROR``."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    ERROR = "ERROR"
    CANCELLED = "CANCELLED"


TERMINAL_TASK_STATUSES = frozenset({TaskStatus.SUCCESS, TaskStatus.ERROR, TaskStatus.CANCELLED})


class GroupStatus(StrEnum):
    """``ProtectionGroupInfo.status``: all 17 values of the spec."""

    UNKNOWN = "UNKNOWN"
    OK = "OK"
    NOT_CONFIGURED = "NOT_CONFIGURED"
    CONFIGURING_PROTECTION = "CONFIGURING_PROTECTION"
    REMOVING_PROTECTION = "REMOVING_PROTECTION"
    RESTORING_PLACEHOLDERS = "RESTORING_PLACEHOLDERS"
    OPERATIONS_IN_PROGRESS = "OPERATIONS_IN_PROGRESS"
    TESTING = "TESTING"
    TEST_COMPLETE = "TEST_COMPLETE"
    CLEANING_UP = "CLEANING_UP"
    RECOVERING = "RECOVERING"
    PARTIALLY_RECOVERED = "PARTIALLY_RECOVERED"
    RECOVERED = "RECOVERED"
    REPROTECTING = "REPROTECTING"
    PARTIALLY_REPROTECTED = "PARTIALLY_REPROTECTED"
    READY = "READY"
    LOADING = "LOADING"


class GroupRecoveryStatus(StrEnum):
    """``ProtectionGroupInfo.recovery_status``."""

    UNKNOWN = "UNKNOWN"
    CLEANUP = "CLEANUP"
    PARTIALLY_RECOVERED = "PARTIALLY_RECOVERED"
    READY = "READY"
    RECOVERY_COMPLETE = "RECOVERY_COMPLETE"
    RECOVERY_IN_PROGRESS = "RECOVERY_IN_PROGRESS"
    REPROTECT_IN_PROGRESS = "REPROTECT_IN_PROGRESS"
    PARTIALLY_REPROTECTED = "PARTIALLY_REPROTECTED"
    TEST_COMPLETE = "TEST_COMPLETE"
    TEST_IN_PROGRESS = "TEST_IN_PROGRESS"


class PlanVmStatus(StrEnum):
    """``RecoveryPlanVmInfo.status`` (recovery status of a VM within a plan)."""

    READY_TO_RECOVER = "READY_TO_RECOVER"
    TEST_IN_PROGRESS = "TEST_IN_PROGRESS"
    TEST_ERROR = "TEST_ERROR"
    TEST_WARNING = "TEST_WARNING"
    TEST_SUCCEEDED = "TEST_SUCCEEDED"
    TEST_INCOMPLETE = "TEST_INCOMPLETE"
    CLEANUP_IN_PROGRESS = "CLEANUP_IN_PROGRESS"
    CLEANUP_ERROR = "CLEANUP_ERROR"
    CLEANUP_INCOMPLETE = "CLEANUP_INCOMPLETE"
    RECOVERY_IN_PROGRESS = "RECOVERY_IN_PROGRESS"
    RECOVERY_ERROR = "RECOVERY_ERROR"
    RECOVERY_WARNING = "RECOVERY_WARNING"
    RECOVERY_SUCCEEDED = "RECOVERY_SUCCEEDED"
    RECOVERY_INCOMPLETE = "RECOVERY_INCOMPLETE"
    REPROTECT_IN_PROGRESS = "REPROTECT_IN_PROGRESS"
    REPROTECT_ERROR = "REPROTECT_ERROR"
    REPROTECT_INCOMPLETE = "REPROTECT_INCOMPLETE"
    UNKNOWN = "UNKNOWN"


class VmProtectionStatus(StrEnum):
    """``VmProtectionStatusDetails.status`` (protection status of a VM within a group)."""

    LOADING = "LOADING"
    NOT_CONFIGURED = "NOT_CONFIGURED"
    CONFIGURING_PROTECTION = "CONFIGURING_PROTECTION"
    REMOVING_PROTECTION = "REMOVING_PROTECTION"
    RESTORING_PLACEHOLDER = "RESTORING_PLACEHOLDER"
    DEVICE_NOT_FOUND = "DEVICE_NOT_FOUND"
    PLACEHOLDER_VM_DELETED = "PLACEHOLDER_VM_DELETED"
    ABR_CONFIGURATION_ERROR = "ABR_CONFIGURATION_ERROR"
    PLACEHOLDER_CREATION_ERROR = "PLACEHOLDER_CREATION_ERROR"
    OK = "OK"
    INVALID = "INVALID"
    MISSING_MAPPING = "MISSING_MAPPING"
    REPLICATION_ERROR = "REPLICATION_ERROR"
    REPLICATION_WARNING = "REPLICATION_WARNING"
    MAPPING_CONFLICT = "MAPPING_CONFLICT"
    MISSING_UNPROTECTED_VM = "MISSING_UNPROTECTED_VM"
    VVOL_CONFIGURATION_ERROR = "VVOL_CONFIGURATION_ERROR"
    VVOL_CONFIGURATION_WARNING = "VVOL_CONFIGURATION_WARNING"


class ServerStatus(StrEnum):
    """``ServerInfo.server_status``."""

    OK = "OK"
    WARNING = "WARNING"
    ERROR = "ERROR"


class IssueStatus(StrEnum):
    """``IssueInfo.status``."""

    WARNING = "WARNING"
    ERROR = "ERROR"


class IssueType(StrEnum):
    """``IssueInfo.issue_type``."""

    VC = "VC"
    VRS = "VRS"
    VRMS = "VRMS"
    SRM = "SRM"
    PROTECTION_GROUP = "PROTECTION_GROUP"
    RECOVERY_PLAN = "RECOVERY_PLAN"
    UNKNOWN = "UNKNOWN"


class OperationType(StrEnum):
    """``HistoryReport.operation_type``."""

    TEST = "TEST"
    CLEANUP = "CLEANUP"
    FAILOVER = "FAILOVER"
    REPROTECT = "REPROTECT"


class ResultState(StrEnum):
    """``HistoryReport.result_state``."""

    SUCCESS = "SUCCESS"
    WARNINGS = "WARNINGS"
    ERRORS = "ERRORS"
    CANCELLED = "CANCELLED"


class SrmModel(BaseModel):
    """Base of the wire models: tolerant of unknown fields, populated by field name."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ServerInfo(SrmModel):
    """A vCenter or SRM server of a pairing (``ServerInfo``)."""

    id: str | None = None
    name: str | None = None
    url: str | None = None
    server_status: str | None = None
    version: str | None = None
    certificates: list[dict[str, Any]] | None = None
    certificate_warnings: list[dict[str, Any]] | None = None


class Pairing(SrmModel):
    """A pairing between this SRM and a remote one (``Pairing``)."""

    pairing_id: str
    local_vc_server: ServerInfo | None = None
    remote_vc_server: ServerInfo | None = None
    local_srm_server: ServerInfo | None = None
    remote_srm_server: ServerInfo | None = None


class Issue(SrmModel):
    """A health issue of a pairing, plan or group (``IssueInfo``)."""

    entity: str | None = None
    entity_name: str | None = None
    description: str | None = None
    timestamp: int | None = None
    status: str | None = None
    issue_type: str | None = None


class RecoveryPlan(SrmModel):
    """A recovery plan (``RecoveryPlanInfo``)."""

    id: str
    name: str
    status: str
    location: str
    protected_site_name: str | None = None
    recovery_site_name: str | None = None
    protected_vc_guid: str | None = None
    recovery_vc_guid: str | None = None
    description: str | None = None
    location_name: str | None = None
    progress: int | None = None
    is_running: bool | None = None


class TaskError(SrmModel):
    """Why a task ended in ``ERROR`` (``TaskError``)."""

    message: str | None = None
    details: str | None = None


class Task(SrmModel):
    """An SRM task started by an action (``Task``)."""

    id: str
    status: str
    description: str | None = None
    description_id: str | None = None
    entity: str | None = None
    entity_name: str | None = None
    progress: int | None = None
    error: TaskError | None = None
    result: Any = None
    queued_time: int | None = None
    start_time: int | None = None
    complete_time: int | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the task ended (SUCCESS, ERROR or CANCELLED)."""
        return self.status in TERMINAL_TASK_STATUSES


class ProtectionGroup(SrmModel):
    """A protection group (``ProtectionGroupInfo``)."""

    id: str
    name: str | None = None
    status: str | None = None
    recovery_status: str | None = None
    protected_site_name: str | None = None
    recovery_site_name: str | None = None
    protected_vc_guid: str | None = None
    recovery_vc_guid: str | None = None
    description: str | None = None
    location: str | None = None
    location_name: str | None = None
    total_vms: int | None = None
    replication_type: str | None = None
    array_pair: str | None = None
    domain_id: str | None = None


class PlanVm(SrmModel):
    """A VM as seen by a recovery plan (``RecoveryPlanVmInfo``)."""

    id: str
    name: str | None = None
    status: str | None = None
    template: bool | None = None
    inside_vapp: bool | None = None
    protection_group: str | None = None
    protection_group_name: str | None = None
    managing_recovery_plan: str | None = None
    recovery_settings: dict[str, Any] | None = None


class VmProtectionStatusDetails(SrmModel):
    """Protection status of a VM in a group (``VmProtectionStatusDetails``)."""

    status: str | None = None
    errors: list[str | None] | None = None


class GroupVm(SrmModel):
    """A VM as seen by a protection group (``ProtectionGroupVmInfo``)."""

    id: str
    name: str
    template: bool | None = None
    inside_vapp: bool | None = None
    protection_info: dict[str, Any] | None = None
    protection_status_details: VmProtectionStatusDetails | None = None
    vvol_replication_group_data: list[dict[str, Any] | None] | None = None


class HistoryReport(SrmModel):
    """A recovery-run history report (``HistoryReport``).

    The spec gives a report no ``id`` field; ``run_key`` identifies it. ``id`` is filled when
    the server sends one or when the report was fetched by id.
    """

    id: str | None = None
    plan_name: str | None = None
    username: str | None = None
    operation_type: str | None = None
    start_time_ms: int | None = None
    human_friendly_duration: str | None = None
    duration_ms: int | None = None
    result_state: str | None = None
    error_count: int | None = None
    warning_count: int | None = None
    run_key: int | None = None
    errors_list: list[str | None] | None = None
    warnings_list: list[str | None] | None = None

    @property
    def report_id(self) -> str | None:
        """The id to pass to ``get_history_report``: ``id`` if known, else ``run_key``."""
        if self.id is not None:
            return self.id
        return None if self.run_key is None else str(self.run_key)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list endpoint (``{"list": [...], "_meta": {...}}``)."""

    items: list[T] = Field(default_factory=list)
    total: int | None = None
    offset: int = 0
    limit: int = 100
