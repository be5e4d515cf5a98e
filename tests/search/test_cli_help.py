"""Every command's --help teaches: a one-line purpose in the command list and a runnable example."""

from __future__ import annotations

import argparse

from gantune.search.cli import build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_has_a_purpose_and_an_example():
    parser = build_parser()
    commands = subcommands(parser)
    assert {"search", "report", "evaluate", "promote", "generate", "server", "data"} <= set(commands)
    listing = parser.format_help()
    for name, sub in commands.items():
        help_text = sub.format_help()
        assert f"example: gantune {name}" in help_text, f"`gantune {name} --help` shows no example"
        assert sub.description and "\n" not in sub.description.split(". ")[0], name
        assert name in listing
    checks = subcommands(commands["data"])
    assert "example: gantune data check" in checks["check"].format_help()


def test_purposes_are_one_line_in_the_command_list():
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    purposes = {c.dest: c.help for c in action._choices_actions}
    assert set(purposes) >= {"search", "report", "evaluate", "promote", "generate", "server", "data"}
    for name, text in purposes.items():
        assert text and "\n" not in text and ". " not in text, f"{name}: {text!r}"


def test_help_and_importing_the_api_load_no_heavy_library():
    """`gantune --help` and `import gantune` (the Python API) pay for nothing they do not run."""
    import subprocess
    import sys

    code = (
        "import sys, gantune\n"
        "from gantune.search import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert callable(gantune.search) and callable(gantune.promote)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray', 'mlflow', 'optuna', 'monai'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
