"""What a user gets: the wheel holds every sub-package (the top-level folders are mapped to
gantune.* by hand in pyproject.toml), and the CLI starts without torch or Ray."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"gantune": "gantune", "search": "gantune/search", "trainables": "gantune/trainables",
           "mlflow_server": "gantune/mlflow_server"}
"""Folder in the repository -> where pyproject.toml's package-dir installs it."""


def expected_modules() -> set[str]:
    """Every .py file of every package (a folder with __init__.py) under the mapped folders, as
    its path inside the wheel."""
    out = set()
    for folder, target in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            package = init.parent
            for module in package.glob("*.py"):
                out.add(f"{target}/{module.relative_to(ROOT / folder).as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    """Build the wheel offline from a copy of the sources (a build in the shared tree would leave
    build/ and *.egg-info behind)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("gantune-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_contains_every_sub_package(wheel_names):
    missing = sorted(expected_modules() - wheel_names)
    assert not missing, f"not in the wheel (add the package to pyproject.toml [tool.setuptools]): {missing}"
    assert "gantune/trainables/gans/base.py" in wheel_names and "gantune/search/cli.py" in wheel_names


def modules_after(*argv: str) -> list[str]:
    """Which of torch / ray a `gantune ...` run imported (in a fresh interpreter)."""
    code = (
        "import sys\nfrom gantune.search.cli import main\n"
        f"try:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return ast.literal_eval(out.strip().splitlines()[-1])


def test_help_imports_neither_torch_nor_ray():
    assert modules_after("--help") == []
    assert modules_after("search", "--help") == []


def test_dry_run_imports_no_ray():
    # torch it does import: the space is validated through TrialConfig, whose sections live in
    # the torch modules (trainables/classifiers.py, gans/base.py, data/augment.py).
    assert "ray" not in modules_after("search", "spaces/demo.yaml", "--dry-run")
