"""Property-based checks: whatever a person passes, falwrap answers with success or one typed, named error.

Hypothesis throws wrong types, NaN, infinity, huge, negative, empty and
unencodable values at the config classes, at every variable of the
environment table, at the argument builders behind ``image()``, ``video()``
and ``run()``, and at the ``falwrap`` command line (in-process, against a
FakeFal whose request counters prove that invalid input sent nothing).
Example counts are tuned so the file runs in a few seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from falwrap import (
    ConfigurationError,
    FalConfig,
    InvalidInputError,
    RateLimitConfig,
    RetryConfig,
    Timeouts,
)
from falwrap.catalog import MODEL_CATALOG
from falwrap.cli import main
from falwrap.config import ENV_VARS
from falwrap.money import MAX_USD, parse_usd
from falwrap.testing import FakeFal
from falwrap.validation import image_arguments, upscale_arguments, validate_arguments, video_arguments

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Numbers at and beyond every edge: NaN, both infinities, zero, negatives, huge and tiny.
edge_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, -1, 1, 0.5, 1e13, 1e400, -0.0, 10**9, 86_400, 86_401, 2**63]),
)
#: Any value a caller might pass by mistake.
anything = st.one_of(
    st.none(),
    st.booleans(),
    edge_numbers,
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", " ", "\ud800", "a\udcffb", "yes", "http://", "redis://", "memory:", "nan", "1e400"]),
    st.binary(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.frozensets(st.integers(), max_size=2),
)
#: What an environment variable may hold: numbers written every way, words, junk, empty.
env_text = st.one_of(
    st.text(max_size=12),
    edge_numbers.map(str),
    st.sampled_from(
        ["", " ", "nan", "inf", "-inf", "1e400", "1e13", "-5", "0", "0.0001", "true", "FALSE", "on", "maybe",
         "100000", "9" * 40, "1_000", "0x10", "http://127.0.0.1:9", "ftp://x", "redis://127.0.0.1:1/0",
         "sqlite:///tmp/x.db", "sqlite://x", "memory:", "postgresql://u:pw@h/db", "low", "urgent", "a b", "\u00e9"]
    ),
)  # fmt: skip


# --- configuration ------------------------------------------------------------------------------------

_FALCONFIG_FIELDS = [
    "api_key", "base_url", "timeouts", "retry", "rate_limit", "daily_budget_usd", "live_pricing", "poll_interval",
    "status_stream", "store_url", "webhook_url", "webhook_jwks_url", "idempotency_ttl", "queue_priority",
    "start_timeout", "object_lifecycle", "server_retries", "fallbacks", "resubmit_ambiguous",
]  # fmt: skip


@FAST
@given(st.dictionaries(st.sampled_from(_FALCONFIG_FIELDS), anything, max_size=4))
def test_falconfig_builds_or_names_the_field(kwargs: dict[str, Any]) -> None:
    """FalConfig(**anything) is a config or a ConfigurationError naming one of the fields given."""
    try:
        config = FalConfig(**kwargs)
    except ConfigurationError as exc:
        assert exc.variable in kwargs, (exc.variable, kwargs)
        assert exc.variable in str(exc)
        return
    assert isinstance(config, FalConfig)


@FAST
@given(
    st.sampled_from([Timeouts, RetryConfig, RateLimitConfig]),
    st.data(),
)
def test_nested_configs_build_or_name_the_field(cls: type, data: st.DataObject) -> None:
    """Timeouts, RetryConfig and RateLimitConfig of anything build or raise ConfigurationError naming a field."""
    import attrs

    names = [field.name for field in attrs.fields(cls) if field.init]
    kwargs = data.draw(st.dictionaries(st.sampled_from(names), anything, max_size=3))
    try:
        cls(**kwargs)
    except ConfigurationError as exc:
        assert exc.variable in {*kwargs, "max_delay"}, (exc.variable, kwargs)


_SECRET_NAMES = ("FAL_KEY", "FAL_API_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET")
_NAMES = [var.name for var in ENV_VARS if var.scope == "library" and var.name not in _SECRET_NAMES]
#: Keys, well-formed or not, that are easy to spot in any message.
_KEYS = st.sampled_from(["canary-id:canary-secret", "canary id:canary-secret", "canary-id:canary\x00secret",
                         "canary-id:canary-s\u00e9cret", "canary\ud800:x", "canary"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(_NAMES), env_text, max_size=5),
    st.dictionaries(st.sampled_from(_SECRET_NAMES), _KEYS, max_size=2),
)
def test_from_env_builds_or_names_the_variable_and_the_value(environ: dict[str, str], keys: dict[str, str]) -> None:
    """from_env of any variables is a config, or a ConfigurationError naming a variable that was set (never a key)."""
    environ = {**environ, **keys}
    try:
        config = FalConfig.from_env(None, environ=environ)
    except ConfigurationError as exc:
        assert exc.variable in environ, (exc.variable, environ)
        message = str(exc)
        assert exc.variable in message
        raw = environ[exc.variable].strip()
        if exc.variable not in _SECRET_NAMES and "://" not in raw:
            assert raw in message or repr(raw) in message
        assert "canary" not in message, "a key appeared in a message"
        return
    assert isinstance(config, FalConfig)
    assert math.isfinite(config.timeouts.image) and config.timeouts.image <= 86_400
    assert "canary" not in repr(config)


# --- arguments of image(), video(), run() and upscale() -------------------------------------------------

json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), edge_numbers, st.text(max_size=8), st.sampled_from(["\ud800", ""])),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), inner, max_size=3),
        st.frozensets(st.integers(), max_size=2),
        st.binary(max_size=4),
    ),
    max_leaves=6,
)
_IMAGE_MODELS = sorted(m for m, info in MODEL_CATALOG.items() if info.kind == "image")
_VIDEO_MODELS = sorted(m for m, info in MODEL_CATALOG.items() if info.kind == "video")
_PARAM_NAMES = sorted({name for info in MODEL_CATALOG.values() for name in info.params} | {"unknown", "image_size"})
params_strategy = st.dictionaries(st.sampled_from(_PARAM_NAMES), json_like, max_size=3)


def _sendable_or_named_error(build: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """``build()``'s arguments, checked to be JSON fal can read; None if it raised InvalidInputError with a field."""
    try:
        arguments = build()
    except InvalidInputError as exc:
        assert exc.field
        return None
    json.dumps(arguments, allow_nan=False, ensure_ascii=False).encode("utf-8")
    return arguments


@FAST
@given(
    st.sampled_from(_IMAGE_MODELS),
    st.one_of(st.text(max_size=12), anything),
    st.one_of(st.none(), st.sampled_from(["square_hd", "1024x768", "8x8", "0x0", "99999x8"]), anything,
              st.tuples(anything, anything)),
    st.one_of(st.integers(-2, 6), anything),
    st.one_of(st.none(), st.integers(-5, 2**33), anything),
    params_strategy,
)  # fmt: skip
def test_image_arguments_are_sendable_or_one_named_error(
    model_id: str, prompt: Any, size: Any, num_images: Any, seed: Any, params: dict[str, Any]
) -> None:
    """image_arguments(anything) returns JSON fal can read, or InvalidInputError with a field."""
    _sendable_or_named_error(
        lambda: image_arguments(
            MODEL_CATALOG[model_id], prompt, size=size, num_images=num_images, seed=seed, params=params
        )
    )


@FAST
@given(
    st.sampled_from(_VIDEO_MODELS),
    st.one_of(st.text(max_size=12), anything),
    st.one_of(st.none(), st.sampled_from(["", "https://x.io/a.png", "a.png"]), anything),
    st.one_of(st.sampled_from([5, 10, "5", "10", 7]), anything),
    st.one_of(st.sampled_from(["16:9", "1:1", "4:3"]), anything),
    params_strategy,
)
def test_video_arguments_are_sendable_or_one_named_error(
    model_id: str, prompt: Any, image: Any, duration: Any, aspect_ratio: Any, params: dict[str, Any]
) -> None:
    """video_arguments(anything) returns JSON fal can read, or InvalidInputError with a field."""
    _sendable_or_named_error(
        lambda: video_arguments(
            MODEL_CATALOG[model_id], prompt, image=image, duration=duration, aspect_ratio=aspect_ratio, params=params
        )
    )


@FAST
@given(
    st.one_of(st.sampled_from([*MODEL_CATALOG, "someone/app", "a/..", "a//b", "a/b?x"]), st.text(max_size=12)),
    st.one_of(st.dictionaries(st.one_of(st.text(max_size=6), st.integers()), json_like, max_size=3), anything),
)
def test_run_arguments_are_sendable_or_one_named_error(model_id: str, arguments: Any) -> None:
    """validate_arguments(any id, anything) passes only a clean id and JSON fal can read."""
    info = MODEL_CATALOG.get(model_id)
    if _sendable_or_named_error(lambda: validate_arguments(info, model_id, arguments)) is not None:
        assert all(part not in {"", ".", ".."} for part in model_id.split("/"))


@FAST
@given(st.sampled_from(sorted(m for m, i in MODEL_CATALOG.items() if i.kind == "upscale")), anything, anything,
       params_strategy)  # fmt: skip
def test_upscale_arguments_are_sendable_or_one_named_error(model_id: str, image: Any, scale: Any, params: Any) -> None:
    """upscale_arguments(anything) returns JSON fal can read, or InvalidInputError with a field."""
    arguments = _sendable_or_named_error(
        lambda: upscale_arguments(MODEL_CATALOG[model_id], image, scale=scale, params=params)
    )
    if arguments is not None:
        assert 1 <= arguments["upscale_factor"] <= 4


# --- the command line -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fal() -> Iterator[FakeFal]:
    """One FakeFal with instant jobs for every command line."""
    with FakeFal(latency=0) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for outputs and a cwd without a .env."""
    return tmp_path_factory.mktemp("cli")


_TOKENS = st.one_of(
    st.sampled_from(
        ["image", "video", "models", "select", "config", "--json", "--debug", "--no-save", "--num-images", "--seed",
         "--size", "--model", "--timeout", "--budget", "--quality", "--urgency", "--kind", "--duration", "--image",
         "--aspect-ratio", "-p", "--param", "--with-image", "--out", "prompt=x", "guidance_scale=NaN",
         "num_inference_steps=1e999", "seed=-1", "a cat", "", "fal-ai/flux/schnell", "fal-ai/flux/..", "upscale",
         "square", "1024x768", "abc", "5", "0", "-1", "1e13", "nan", "draft", "high", "$0.01", "16:9"]
    ),
    st.text(max_size=6),
    edge_numbers.map(str),
)  # fmt: skip


def _values(*values: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(values), st.text(max_size=5))


_COMMON = {
    "--model": _values("fal-ai/flux/schnell", "fal-ai/flux/..", "a/b", "fal-ai/clarity-upscaler", ""),
    "--timeout": _values("5", "0", "-1", "nan", "inf", "1e13", "86401", "abc"),
    "--budget": _values("0.01", "1", "-1", "1e400", "nan", "$0.05", "x"),
    "--quality": _values("draft", "premium", "ultra"),
    "--urgency": _values("low", "high", "asap"),
    "-p": _values("num_inference_steps=2", "guidance_scale=NaN", "prompt=x", "seed=-1", "unknown=1", "x",
                  "guidance_scale=1e999", 'image_size={"width": 8}', "negative_prompt=blur", "cfg_scale=0.4"),
    "--out": _values(".", "out", "bad\x00dir"),
    "--no-save": None,
}  # fmt: skip
_OPTIONS: dict[str, dict[str, st.SearchStrategy[str] | None]] = {
    "image": {
        **_COMMON,
        "--num-images": _values("1", "2", "5", "0", "-1", "abc", "1e3"),
        "--seed": _values("7", "-1", "99999999999", "x"),
        "--size": _values("square", "512x512", "1024x768", "0x8", "9x9", "abc", "99999x8"),
    },
    "video": {
        **_COMMON,
        "--image": _values("", "nope.png", "https://files.example/a.png", "data:image/png;base64,xx"),
        "--duration": _values("5", "10", "7", "x"),
        "--aspect-ratio": _values("16:9", "1:1", "4:3"),
    },
    "models": {"--kind": _values("image", "video", "upscale", "x")},
    "select": {
        "--kind": _values("image", "video", "upscale"),
        "--budget": _COMMON["--budget"],
        "--quality": _COMMON["--quality"],
        "--with-image": None,
    },
    "config": {},
}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command line that mostly parses: a subcommand, a prompt, and a few options with edge values."""
    command = draw(st.sampled_from(sorted(_OPTIONS)))
    argv = ["--json"] if draw(st.booleans()) else []
    argv.append(command)
    if command in {"image", "video"}:
        argv.append(draw(_values("a cat", "", " ", "a \udcff cat", "x" * 50)))
        argv.append("--no-save")
    options = _OPTIONS[command]
    chosen = draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True)) if options else []
    for option in chosen:
        argv.append(option)
        values = options[option]
        if values is not None:
            argv.append(draw(values))
    return argv


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv=st.one_of(command_lines(), st.lists(_TOKENS, max_size=7)))
def test_any_command_line_ends_in_a_documented_exit_code(
    fal: FakeFal, workdir: Path, argv: list[str], monkeypatch_module: pytest.MonkeyPatch
) -> None:
    """main(any argv) never crashes (exit 1); --json gives exactly one JSON document; refusals send nothing."""
    before = dict(fal.counters)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code in {0, 2, 3, 4, 5, 6}, (argv, err.getvalue())
    if code != 0:
        assert err.getvalue().startswith("falwrap: error: "), err.getvalue()
        assert len(err.getvalue().splitlines()) == 1 or "--debug" in argv
    if code in {2, 3, 6}:
        assert dict(fal.counters) == before, f"{argv} was refused but reached FakeFal"
    if "--json" in argv and code != 0:
        json.loads(out.getvalue())
    assert fal.key.split(":")[1] not in out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def monkeypatch_module(fal: FakeFal, workdir: Path) -> Iterator[pytest.MonkeyPatch]:
    """The command's environment: FakeFal's URL and key, nothing else of falwrap's; cwd in a scratch directory."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith(("FAL_", "FALWRAP_"))]:
            patch.delenv(name)
        patch.setenv("FAL_KEY", fal.key)
        patch.setenv("FAL_BASE_URL", fal.url)
        patch.setenv("FAL_REQUESTS_PER_MINUTE", "600000")
        patch.chdir(workdir)
        yield patch


@FAST
@given(st.one_of(st.decimals(allow_nan=True, allow_infinity=True), edge_numbers, st.text(max_size=10), anything))
def test_every_amount_the_parser_accepts_is_sane_money(value: Any) -> None:
    """parse_usd accepts only finite amounts from 0 to 10^9 USD and refuses the rest with ValueError."""
    try:
        amount = parse_usd(value)
    except ValueError:
        return
    assert amount.is_finite()
    assert Decimal(0) <= amount <= MAX_USD
