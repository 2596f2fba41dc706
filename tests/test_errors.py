"""The error tree and the mapping from fal's answers to friendly, typed errors."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

import falwrap
from falwrap.errors import (
    AmbiguousSubmissionError,
    AuthenticationError,
    BackendUnavailableError,
    BudgetExceededError,
    ConfigurationError,
    FalApiError,
    FalConnectionError,
    FalTimeoutError,
    FalwrapError,
    InvalidInputError,
    InvalidRequestError,
    ModelError,
    NoModelError,
    NotFoundError,
    PaymentRequiredError,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
    error_code,
)
from falwrap.responses import error_from_response, parse_retry_after


def test_tree_and_builtin_bases() -> None:
    """Each error subclasses FalwrapError and the builtin it really is."""
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(NoModelError, LookupError)
    assert issubclass(RateLimitTimeout, TimeoutError)
    assert issubclass(FalTimeoutError, TimeoutError)
    assert issubclass(FalTimeoutError, FalApiError)
    for cls in (AuthenticationError, PaymentRequiredError, InvalidRequestError, NotFoundError, RateLimitError,
                ServerError, ModelError):  # fmt: skip
        assert issubclass(cls, FalApiError)
        assert issubclass(cls, FalwrapError)


def test_every_error_is_exported_at_top_level() -> None:
    """The whole tree is importable from falwrap itself."""
    classes = [name for name in falwrap.errors.__all__ if isinstance(getattr(falwrap.errors, name), type)]
    assert "AmbiguousSubmissionError" in classes
    for name in classes:
        assert getattr(falwrap, name) is getattr(falwrap.errors, name)


@pytest.mark.parametrize(
    ("cls", "code", "exit_status", "http_status"),
    [
        (FalwrapError, "FALWRAP_ERROR", 1, 500),
        (ConfigurationError, "CONFIGURATION", 3, 500),
        (InvalidInputError, "INVALID_INPUT", 2, 400),
        (BudgetExceededError, "BUDGET_EXCEEDED", 6, 429),
        (NoModelError, "NO_MODEL", 2, 400),
        (RateLimitTimeout, "RATE_LIMIT_TIMEOUT", 5, 503),
        (BackendUnavailableError, "BACKEND_UNAVAILABLE", 3, 503),
        (FalApiError, "API_ERROR", 4, 502),
        (AuthenticationError, "UNAUTHORIZED", 4, 500),
        (PaymentRequiredError, "PAYMENT_REQUIRED", 4, 402),
        (InvalidRequestError, "INVALID_INPUT", 4, 422),
        (NotFoundError, "NOT_FOUND", 4, 404),
        (RateLimitError, "RATE_LIMIT", 4, 503),
        (ServerError, "SERVICE_UNAVAILABLE", 4, 502),
        (ModelError, "MODEL_ERROR", 4, 502),
        (FalConnectionError, "CONNECTION_ERROR", 4, 502),
        (AmbiguousSubmissionError, "AMBIGUOUS_SUBMISSION", 4, 502),
        (FalTimeoutError, "TIMEOUT", 5, 504),
    ],
)
def test_each_class_carries_its_code_exit_status_and_http_status(
    cls: type[FalwrapError], code: str, exit_status: int, http_status: int
) -> None:
    """Code, CLI exit status and HTTP status are class attributes, the table drawn in the errors module."""
    assert (cls.code, cls.exit_status, cls.http_status) == (code, exit_status, http_status)
    assert f"{cls.__name__}" in falwrap.errors.__doc__
    row = next(line for line in falwrap.errors.__doc__.splitlines() if f" {cls.__name__}" in line)
    assert row.split()[-3:] == [code, str(exit_status), str(http_status)]


def test_a_subclass_inherits_its_parents_code_and_statuses() -> None:
    """An application's subclass of InvalidInputError is coded, exited and answered like its parent."""

    class TooLong(InvalidInputError):
        pass

    err = TooLong("prompt: too long", field="prompt")
    assert (err.error_code, err.exit_status, err.http_status) == ("INVALID_INPUT", 2, 400)


def test_error_code_reads_the_class_or_fal_and_names_everything_else() -> None:
    """error_code(): a class's code, fal's own error type, INTERRUPTED for Ctrl-C, a type name otherwise."""
    budget = BudgetExceededError(spent=Decimal(1), reserved=Decimal(0), estimate=Decimal(1), budget=Decimal(1))
    assert error_code(budget) == "BUDGET_EXCEEDED"
    assert error_code(InvalidInputError("x")) == "INVALID_INPUT"
    assert error_code(NoModelError("x")) == "NO_MODEL"
    assert error_code(RateLimitTimeout("x")) == "RATE_LIMIT_TIMEOUT"
    assert error_code(BackendUnavailableError("x")) == "BACKEND_UNAVAILABLE"
    assert error_code(ConfigurationError("x")) == "CONFIGURATION"
    assert error_code(ModelError("x", error_code="content_policy_violation")) == "content_policy_violation"
    assert error_code(ServerError("x")) == "SERVICE_UNAVAILABLE"
    assert error_code(AmbiguousSubmissionError("x")) == "AMBIGUOUS_SUBMISSION"
    assert error_code(KeyboardInterrupt()) == "INTERRUPTED"
    assert error_code(ZeroDivisionError()) == "ZeroDivisionError"


def test_ambiguous_submission_is_a_connection_error_that_nobody_resubmits() -> None:
    """AmbiguousSubmissionError is caught as a FalConnectionError and is not retryable unless said."""
    err = AmbiguousSubmissionError("the answer to the submission was lost", attempts=1)
    assert isinstance(err, FalConnectionError)
    assert isinstance(err, FalApiError)
    assert not err.retryable
    assert "resubmitted" in (AmbiguousSubmissionError.__doc__ or "")


def _json(body: object) -> bytes:
    return json.dumps(body).encode()


def test_422_detail_list_gives_field_level_message() -> None:
    """A 422 with fal's detail list names the field and fal's words, and is not retryable."""
    body = _json({"detail": [{"loc": ["body", "guidance_scale"], "msg": "Input should be less than or equal to 20",
                              "type": "less_than_equal", "ctx": {"le": 20}, "input": 25}]})  # fmt: skip
    err = error_from_response(422, {"x-fal-request-id": "req-1"}, body, model_id="fal-ai/flux/dev")
    assert isinstance(err, InvalidRequestError)
    assert "guidance_scale: Input should be less than or equal to 20" in str(err)
    assert err.error_code == "less_than_equal"
    assert err.status_code == 422
    assert err.request_id == "req-1"
    assert err.details[0]["ctx"] == {"le": 20}
    assert not err.retryable


def test_job_failed_content_policy_is_a_model_error_not_retryable() -> None:
    """A job that failed on content policy is a ModelError with fal's type and advice."""
    body = _json({"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]})
    err = error_from_response(422, {"X-Fal-Retryable": "false"}, body, request_id="r9", job_failed=True)
    assert isinstance(err, ModelError)
    assert err.error_code == "content_policy_violation"
    assert err.request_id == "r9"
    assert not err.retryable
    assert "content" in str(err).lower()


def test_retryable_header_is_the_authority() -> None:
    """X-Fal-Retryable wins over what the error type alone would suggest."""
    body = _json({"detail": [{"msg": "flagged", "type": "content_policy_violation"}]})
    assert error_from_response(422, {"x-fal-retryable": "true"}, body, job_failed=True).retryable
    body = _json({"detail": "Runner disconnected", "error_type": "runner_disconnected"})
    assert not error_from_response(503, {"X-Fal-Retryable": "false"}, body, job_failed=True).retryable


def test_request_error_flat_body_and_header() -> None:
    """fal's flat request-error body gives a ServerError coded with its error_type, retryable."""
    body = _json({"detail": "Runner scheduling failed", "error_type": "runner_scheduling_failure"})
    err = error_from_response(503, {"X-Fal-Error-Type": "runner_scheduling_failure"}, body, attempts=4)
    assert isinstance(err, ServerError)
    assert err.error_code == "runner_scheduling_failure"
    assert err.retryable
    assert "4 attempts" in str(err)


def test_user_start_timeout_is_not_retried() -> None:
    """A 504 caused by the caller's own start timeout is a timeout, never retried."""
    body = _json({"detail": "Request timed out", "error_type": "request_timeout"})
    err = error_from_response(504, {"X-Fal-Request-Timeout-Type": "user"}, body, request_id="r1")
    assert isinstance(err, FalTimeoutError)
    assert not err.retryable


def test_nginx_page_is_a_retryable_server_error_without_html() -> None:
    """A gateway's HTML page maps to a retryable ServerError whose message holds no HTML."""
    html = b"<html><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
    err = error_from_response(502, {"content-type": "text/html"}, html)
    assert isinstance(err, ServerError)
    assert err.retryable
    assert "<" not in str(err)
    assert err.error_code == "SERVICE_UNAVAILABLE"


@pytest.mark.parametrize(
    ("status", "body", "cls", "code", "words"),
    [
        (401, {"detail": "No user found for Key ID and Secret"}, AuthenticationError, "UNAUTHORIZED", "FAL_KEY"),
        (403, {"detail": "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."},
         PaymentRequiredError, "PAYMENT_REQUIRED", "credits"),
        (403, {"detail": "Forbidden"}, AuthenticationError, "UNAUTHORIZED", "FAL_KEY"),
        (402, {"detail": "Payment required"}, PaymentRequiredError, "PAYMENT_REQUIRED", "dashboard"),
        (404, {"detail": "Not found"}, NotFoundError, "NOT_FOUND", "model"),
        (429, {"detail": "Too many requests"}, RateLimitError, "RATE_LIMIT", "Slow down"),
        (500, {"detail": "boom"}, ServerError, "INTERNAL_ERROR", "Try again"),
        (400, {"detail": "bad"}, InvalidRequestError, "INVALID_INPUT", "Fix the arguments"),
    ],
)  # fmt: skip
def test_status_table(status: int, body: object, cls: type[FalApiError], code: str, words: str) -> None:
    """Each status maps to its class, code and a message saying what to do."""
    err = error_from_response(status, {}, _json(body), model_id="fal-ai/flux/dev")
    assert type(err) is cls
    assert err.error_code == code
    assert words in str(err)
    assert err.status_code == status


def test_retry_after_seconds_and_date() -> None:
    """Retry-After is read as seconds or as an HTTP date; junk is ignored."""
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("junk") is None
    assert parse_retry_after("-3") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    err = error_from_response(429, {"Retry-After": "2"}, b"{}")
    assert err.retry_after == 2.0
    assert "2 s" in str(err)


def test_budget_error_names_every_amount() -> None:
    """BudgetExceededError says spent, reserved, estimate and budget."""
    err = BudgetExceededError(
        spent=Decimal("0.05"), reserved=Decimal("0.025"), estimate=Decimal("0.025"), budget=Decimal("0.075")
    )
    text = str(err)
    for amount in ("0.05", "0.025", "0.075"):
        assert amount in text
    assert "No request was sent" in text


@pytest.mark.parametrize("job_failed", [True, False])
def test_fal_sentences_ending_in_a_full_stop_do_not_double_it(job_failed: bool) -> None:
    """fal's own "... content checker." inside a message never becomes "checker.." (nor does its advice)."""
    msg = "The content could not be processed because it contained material flagged by a content checker."
    body = _json({"detail": [{"loc": ["body", "prompt"], "msg": msg, "type": "content_policy_violation"}]})
    err = error_from_response(422, {}, body, request_id="r1", job_failed=job_failed, model_id="fal-ai/flux/dev")
    assert "checker." in str(err)
    assert ".." not in str(err)
    typed_only = _json({"detail": [{"type": "content_policy_violation"}]})
    flat = error_from_response(422, {}, typed_only, job_failed=job_failed)
    assert ".." not in str(flat)
    plain = error_from_response(418, {}, b"I am a teapot.")
    assert str(plain).endswith("I am a teapot.")
