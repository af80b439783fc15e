"""The README's file tree names every module of bot/, channels/ and agents/ (it is the map a
reader starts from; a module missing there is one nobody finds)."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_the_readme_tree_names_every_module():
    readme = (ROOT / "README.md").read_text()
    tree = readme[readme.index("```\nbot/ "):]
    tree = tree[:tree.index("\n```", 4)]
    named = set(re.findall(r"[a-z_]+", tree))
    modules = {p.stem for top in ("bot", "channels", "agents") for p in (ROOT / top).rglob("*.py")
               if p.stem not in ("__init__", "__main__")}
    assert sorted(modules - named) == []
