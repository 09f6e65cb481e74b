"""Evaluation worker processes are spawned, and spawned workers import the main script again:
an unguarded script is evaluated in this process instead of re-running in every worker."""

from __future__ import annotations

import sys
import types

import pytest

from realdeal.metrics.suite import spawn_safe_main


@pytest.mark.parametrize(
    "source,safe",
    [
        ("from realdeal import evaluate_unpaired\nevaluate_unpaired(...)\n", False),
        ("def main():\n    pass\n\nif __name__ == '__main__':\n    main()\n", True),
        ('if __name__ == "__main__":\n    main()\n', True),
        ("x = '__name__ == \"__main__\"'\n", False),  # not a guard, only the words
    ],
)
def test_guarded_scripts_are_spawn_safe(tmp_path, monkeypatch, source, safe):
    script = tmp_path / "script.py"
    script.write_text(source)
    main = types.ModuleType("__main__")
    main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert spawn_safe_main() is safe


def test_interactive_sessions_are_spawn_safe(monkeypatch):
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))  # no __file__
    assert spawn_safe_main()
