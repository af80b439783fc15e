"""Prompts are files in prompts/, loaded by name and rendered by our code with string.Template."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


@lru_cache(maxsize=64)
def _load(name: str) -> Template:
    # a declared agent's prompt is a file path (relative to the policy file, resolved)
    path = Path(name) if Path(name).is_absolute() else PROMPTS / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    return Template(path.read_text())


def render(name: str, **values: str) -> str:
    """The prompt with $placeholders filled. Keep values stable: the prompt is the cached prefix."""
    return _load(name).safe_substitute(values).strip()
