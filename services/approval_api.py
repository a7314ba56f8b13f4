"""The approval HTTP endpoint: list pending approvals, approve or deny one.

Every request needs ``Authorization: Bearer <BALLAST_ADMIN_TOKEN>``. Approving
signs a grant with the server's signing key, so the approver keys of the tool
hosts must include it.

::

    GET  /approvals                   pending approvals (JSON)
    POST /approvals/{id}/approve      {"by": "alice"}
    POST /approvals/{id}/deny         {"by": "alice"}
"""

from __future__ import annotations

import hmac
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from contracts.approval import ApprovalStatus
from services.approvals import Approvals
from services.errors import BrokerError
from services.identity import SigningKey


def approval_app(approvals: Approvals, *, token: str, signer: SigningKey | None) -> Starlette:
    """The ASGI app over ``approvals``, guarded by ``token``."""

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def pending(request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        found = [
            s.request.model_dump(mode="json")
            for s in await approvals.all()
            if s.request.status is ApprovalStatus.PENDING
        ]
        return JSONResponse(found)

    async def decide(request: Request) -> JSONResponse:
        if not authorized(request):
            return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        approval_id = request.path_params["approval_id"]
        approve = request.path_params["verb"] == "approve"
        try:
            body = json.loads(await request.body() or b"{}")
            by = f"http:{body.get('by', 'unknown')}"
            stored = await approvals.find(approval_id)
            decided = await approvals.decide(
                stored.request.agent, approval_id, approve=approve, approver=by, key=signer
            )
        except (BrokerError, json.JSONDecodeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        return JSONResponse(decided.request.model_dump(mode="json"))

    return Starlette(
        routes=[
            Route("/approvals", pending, methods=["GET"]),
            Route("/approvals/{approval_id}/{verb:str}", decide, methods=["POST"]),
        ]
    )
