"""Human approvals, kept in the NATS KV bucket ``ballast_approvals``.

A run whose tool call needs approval records a request here (with what it needs
to resume: the task and its signed principal) and suspends: its message is
acknowledged and its worker freed. Whoever decides (``ballast approvals``, the
HTTP endpoint, or the expiry sweep of the agent's hosts) changes the record with
a compare-and-set, so a decision is taken once, and publishes the task again;
the re-executed run finds the decision and goes on: approved, it sends the call
again with the signed grant; denied or expired, the step fails with
``approval_denied``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict

from contracts.approval import ApprovalRequest, ApprovalStatus
from contracts.subjects import Header, event_subject, task_subject
from contracts.tasks import TaskRequest
from contracts.wire import utc_now
from services.errors import BrokerError
from services.identity import SigningKey, sign_grant
from services.kv import kv_entries

log = structlog.get_logger("ballast.approvals")

BUCKET = "ballast_approvals"
RESUME_HEADER = "ballast-resume"
"""Set on a task published again because an approval was decided."""


class StoredApproval(BaseModel):
    """An approval request and what resuming its run takes."""

    model_config = ConfigDict(extra="forbid")

    request: ApprovalRequest
    task: str
    """The JSON of the suspended task, published again on a decision."""
    principal_token: str | None
    """Its signed principal (``ballast-principal``), so the resumed run is verified again."""


def kv_key(agent: str, approval_id: str) -> str:
    """A KV key for an approval: ``<agent>.<task_id>.<seq>``."""
    return f"{agent}.{approval_id.replace(':', '.')}"


class Approvals:
    """Read, create and decide approvals."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        try:
            self._kv = await self._js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            self._kv = await self._js.create_key_value(bucket=BUCKET, history=5)

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("start the approval store first")
        return self._kv

    async def get(self, agent: str, approval_id: str) -> tuple[StoredApproval, int] | None:
        """The approval and its revision, or None."""
        try:
            entry = await self.kv.get(kv_key(agent, approval_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        return StoredApproval.model_validate_json(entry.value), entry.revision

    async def request(self, stored: StoredApproval) -> bool:
        """Record a new request; False if one already exists (a re-executed run)."""
        key = kv_key(stored.request.agent, stored.request.approval_id)
        try:
            await self.kv.create(key, stored.model_dump_json().encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        return True

    async def all(self, agent: str | None = None) -> list[StoredApproval]:
        """Every approval (of ``agent``), newest request last."""
        entries = await kv_entries(self._js, self.kv, BUCKET, f"{agent or '*'}.>")
        found = [StoredApproval.model_validate_json(value) for value in entries.values()]
        return sorted(found, key=lambda s: s.request.requested_at)

    async def find(self, approval_id: str) -> StoredApproval:
        """The approval with ``approval_id`` whatever its agent; `BrokerError` if none."""
        for stored in await self.all():
            if stored.request.approval_id == approval_id:
                return stored
        raise BrokerError(f"no approval {approval_id}; list them with 'ballast approvals ls'")

    async def decide(
        self,
        agent: str,
        approval_id: str,
        *,
        approve: bool,
        approver: str,
        key: SigningKey | None,
        status: ApprovalStatus | None = None,
    ) -> StoredApproval:
        """Take the decision (once: a compare-and-set) and publish the task to resume it."""
        found = await self.get(agent, approval_id)
        if found is None:
            raise BrokerError(f"no approval {approval_id} for agent {agent}")
        stored, revision = found
        request = stored.request
        if request.status is not ApprovalStatus.PENDING:
            raise BrokerError(f"approval {approval_id} was already decided: {request.status.value}")
        now = utc_now()
        update: dict[str, object] = {
            "status": status or (ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED),
            "decided_by": approver,
            "decided_at": now,
        }
        if approve:
            if key is None:
                raise BrokerError("approving signs a grant: configure BALLAST_SIGNING_KEY")
            grant = sign_grant(
                approval_id,
                request.tool,
                request.args,
                approver=approver,
                expires_at=now + timedelta(hours=1),
                key=key,
            )
            update["grant"] = grant.model_dump_json()
        decided = stored.model_copy(update={"request": request.model_copy(update=update)})
        try:
            await self.kv.update(
                kv_key(agent, approval_id), decided.model_dump_json().encode(), last=revision
            )
        except nats.js.errors.KeyWrongLastSequenceError as exc:
            raise BrokerError(
                f"approval {approval_id} was decided by someone else just now"
            ) from exc
        await self._announce_and_resume(decided)
        log.info("approval.decided", approval=approval_id, status=decided.request.status)
        return decided

    async def _announce_and_resume(self, stored: StoredApproval) -> None:
        request = stored.request
        await self._js.publish(
            event_subject("approval", request.status.value),
            request.model_dump_json().encode(),
            headers={
                Header.MSG_ID: f"approval:{request.approval_id}:{request.status.value}",
                Header.TASK_ID: request.task_id,
            },
        )
        task = TaskRequest.model_validate_json(stored.task)
        headers = {
            Header.MSG_ID: f"{task.task_id}:resume:{request.approval_id}",
            Header.TASK_ID: task.task_id,
            RESUME_HEADER: request.approval_id,
        }
        if stored.principal_token:
            headers[Header.PRINCIPAL] = stored.principal_token
        await self._js.publish(task_subject(task.agent), stored.task.encode(), headers=headers)

    async def expire_due(self, agent: str) -> int:
        """Deny the pending approvals of ``agent`` whose time is up; how many."""
        expired = 0
        now = utc_now()
        for stored in await self.all(agent):
            request = stored.request
            if request.status is ApprovalStatus.PENDING and request.expires_at <= now:
                with contextlib.suppress(BrokerError):
                    await self.decide(
                        agent, request.approval_id, approve=False, approver="expiry",
                        key=None, status=ApprovalStatus.EXPIRED,
                    )  # fmt: skip
                    expired += 1
        return expired


async def sweep_expired(approvals: Approvals, agents: list[str], interval_s: float) -> None:
    """Expire due approvals of ``agents`` every ``interval_s`` until cancelled."""
    while True:
        for agent in agents:
            try:
                await approvals.expire_due(agent)
            except (nats.errors.Error, OSError) as exc:
                log.warning("approval.sweep_failed", agent=agent, error=str(exc))
        await asyncio.sleep(interval_s)
