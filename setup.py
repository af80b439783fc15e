"""The one thing pyproject.toml cannot say: `packages.find` there would miss the two data packages
it maps from other folders (`package-dir`), and the list cannot be both found and given. So: every
package under bot/, channels/ and agents/ (a new channels/<name>/ ships without a line anywhere),
plus bot._prompts (prompts/) and agents._runbooks (runbooks/)."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["bot", "bot.*", "channels", "channels.*", "agents", "agents.*"])
      + ["bot._prompts", "agents._runbooks"])
