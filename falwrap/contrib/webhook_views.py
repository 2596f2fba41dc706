"""The framework-neutral part of a webhook endpoint: one verified delivery in, one HTTP answer out.

Both integrations route fal's deliveries through :func:`webhook_answer`:

    200  the delivery was verified and applied (or was a duplicate, or names a job
         this store does not know: fal must stop retrying it either way)
    400  the body is not a delivery (malformed, too large): nothing was recorded
    401  the delivery is not provably from fal (signature, timestamp, headers, keys)
    503  fal's keys or the shared store could not be reached, or the delivery is
         ``pending`` (it beat the journaling of its own submission): fal retries later

Each answer is JSON; an error's body carries the verification ``reason``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from falwrap.errors import BackendUnavailableError, WebhookVerificationError

if TYPE_CHECKING:
    from falwrap.client import FalClient
    from falwrap.webhook_outcomes import JobOutcome

__all__ = ["webhook_answer"]

#: Reasons that say the body itself is unusable (400); every other reason is an authentication failure (401).
_BAD_REQUEST = frozenset({"malformed_body", "body_too_large"})


def webhook_answer(client: FalClient, headers: Any, body: bytes) -> tuple[int, dict[str, Any], JobOutcome | None]:
    """Verify and apply one delivery; return ``(status, json_body, outcome)``.

    ``outcome`` is ``None`` when the delivery was refused; ``outcome.new`` is true for
    the one delivery that settled its job (send the "job finished" signal then).
    """
    try:
        outcome = client.handle_webhook(headers, body)
    except WebhookVerificationError as exc:
        if exc.reason == "jwks_unavailable":
            status = 503
        elif exc.reason in _BAD_REQUEST:
            status = 400
        else:
            status = 401
        return status, {"error": {"code": exc.reason, "message": str(exc)}}, None
    except BackendUnavailableError as exc:
        return 503, {"error": {"code": "BACKEND_UNAVAILABLE", "message": str(exc)}}, None
    answer = {
        "request_id": outcome.request_id,
        "status": outcome.status,
        "state": None if outcome.state is None else str(outcome.state),
    }
    return (503 if outcome.status == "pending" else 200), answer, outcome
