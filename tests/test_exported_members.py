"""The public API: what falwrap exports is exactly what it documents, and every name resolves."""

from __future__ import annotations

import subprocess
import sys

import falwrap


def test_all_names_resolve_and_are_unique() -> None:
    """Every name in falwrap.__all__ is importable from falwrap, once."""
    assert len(set(falwrap.__all__)) == len(falwrap.__all__)
    for name in falwrap.__all__:
        assert getattr(falwrap, name) is not None


def test_design_contract_names_are_exported() -> None:
    """The public names the README documents and users rely on are all there."""
    promised = {
        "FalClient", "FalConfig", "Timeouts", "RetryConfig", "RateLimitConfig",
        "ImageResult", "Image", "VideoResult", "Video", "JobHandle",
        "FalwrapError", "ConfigurationError", "InvalidInputError", "BudgetExceededError", "NoModelError",
        "RateLimitTimeout", "FalApiError", "AuthenticationError", "PaymentRequiredError", "InvalidRequestError",
        "NotFoundError", "RateLimitError", "ServerError", "ModelError", "FalConnectionError", "FalTimeoutError",
        "LeakyBucket", "RedisLeakyBucket", "CostLedger", "RedisLedger", "CallRecord",
        "ModelInfo", "MODEL_CATALOG", "TaskRequirements", "select_model", "estimate_cost",
        "AmbiguousSubmissionError",
    }  # fmt: skip
    assert promised <= set(falwrap.__all__)


def test_import_is_light() -> None:
    """`import falwrap` loads neither fal_client, httpx, redis, requests nor cryptography (they load on first use)."""
    heavy = "('fal_client', 'httpx', 'redis', 'requests', 'cryptography')"
    code = f"import sys, falwrap; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_pytest_plugin_costs_nothing_until_fake_fal_is_used() -> None:
    """Loading the plugin (pytest does, wherever falwrap is installed) imports neither the emulator nor httpx."""
    import subprocess
    import sys

    code = (
        "import sys, falwrap.testing.plugin\n"
        "loaded = [m for m in ('falwrap.testing.emulator', 'httpx', 'fal_client', 'requests') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from falwrap.testing import FakeFal\n"
        "assert 'falwrap.testing.emulator' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
