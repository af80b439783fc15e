"""Prompts are files in prompts/, loaded by name and rendered by our code with string.Template.

An installed wheel carries them as package data (`bot._prompts`, mapped from prompts/ in
pyproject.toml) and they are found through importlib.resources; a source checkout reads prompts/
itself; CHATOPS_PROMPTS_DIR (environment) points at a directory of your own instead.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

SOURCE_PROMPTS = Path(__file__).resolve().parent.parent / "prompts"


def prompts_dir() -> Traversable:
    if override := os.environ.get("CHATOPS_PROMPTS_DIR"):
        return Path(override)
    return packaged("bot._prompts", SOURCE_PROMPTS)


def packaged(package: str, source: Path) -> Traversable:
    """The package-data directory `package` of an installed wheel, else `source` (a checkout)."""
    try:
        found = resources.files(package)
    except ModuleNotFoundError:
        return source
    return found if found.is_dir() else source


@lru_cache(maxsize=64)
def _load(directory: str, name: str) -> Template:
    # a declared agent's prompt is a file path (relative to the policy file, resolved)
    path = Path(name) if Path(name).is_absolute() else prompts_dir() / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path} (CHATOPS_PROMPTS_DIR: {directory or 'unset'})")
    return Template(path.read_text())


def render(name: str, **values: str) -> str:
    """The prompt with $placeholders filled. Keep values stable: the prompt is the cached prefix."""
    return _load(os.environ.get("CHATOPS_PROMPTS_DIR", ""), name).safe_substitute(values).strip()
