"""The documentation of the environment variables, rendered from falwrap's one table.

``.env.example`` and the README's configuration table must say exactly what
:data:`falwrap.config.ENV_VARS` says; the tests compare them with what this
module renders. After changing the table, regenerate with
``python tests/env_docs.py`` (it rewrites ``.env.example`` and prints the
README's table).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from falwrap.config import ENV_VARS, EnvVar

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"

_PREAMBLE = """\
# falwrap configuration. Copy to .env (which git ignores) and fill in.
# Real environment variables win over this file. Durations are in MILLISECONDS.
# Every name also works as a key of Django's FALWRAP setting and of Flask's app.config.
"""

#: Variables written uncommented, so that a copied file asks for them.
_REQUIRED = ("FAL_KEY",)


def _entry(var: EnvVar) -> list[str]:
    text = var.doc + (f" Default: {var.default}" if var.default else "")
    lines = [f"# {line}" for line in textwrap.wrap(text, width=86)]
    sample = var.default or var.example
    lines.append(f"{var.name}=" if var.name in _REQUIRED else f"# {var.name}={sample}")
    return lines


def render_env_example() -> str:
    """The whole ``.env.example``: sections in the table's order, each variable's doc, default and a sample."""
    lines = _PREAMBLE.splitlines()
    section = ""
    for var in ENV_VARS:
        if var.section != section:
            section = var.section
            lines += ["", f"# --- {section} ".ljust(80, "-")]
        lines += _entry(var)
    return "\n".join(lines) + "\n"


def render_readme_table() -> str:
    """The README's configuration table: variable, default (in its unit) and what it does."""
    rows = ["| variable | default | unit | meaning |", "|---|---|---|---|"]
    for var in ENV_VARS:
        default = f"`{var.default}`" if var.default else "unset"
        rows.append(f"| `{var.name}` | {default} | {var.value.unit} | {var.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    ENV_EXAMPLE.write_text(render_env_example())
    print(render_readme_table(), end="")
