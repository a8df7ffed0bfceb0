"""What `pip install .` installs: every package of the checkout (the editable install finds them
all by their folders, so only a regular install, such as the Dockerfile's, would miss one)."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_installed() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {
        "tether." + ".".join(init.parent.relative_to(REPO).parts): init.parent
        for top in setuptools["package-dir"].values()
        for init in (REPO / top).rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == set(folders), sorted(
        set(folders) ^ set(setuptools["packages"])
    )
