"""The package's layering (realdeal.utils.structure.LAYERS): no import runs backwards, nothing
below ``training`` imports it, and every subpackage has a layer."""

from __future__ import annotations

from realdeal.utils.structure import LAYERS, backward_imports, graph, imports, layer_of


def test_every_unit_has_a_layer():
    units = {i.source_unit for i in imports()} | {i.target_unit for i in imports()}
    units.discard("(top)")
    for unit in units:
        layer_of(unit)  # raises for a subpackage nobody placed


def test_no_import_runs_backwards():
    bad = [f"{i.module}:{i.line} imports {i.target}" for i in backward_imports()]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_only_training_demo_and_commands_import_training():
    users = {src for src, dsts in graph().items() if "training" in dsts}
    assert users <= {"demo", "commands"}, users


def test_the_checker_sees_a_backward_import(tmp_path):
    """The check itself can fail: a fake package where data imports training is caught."""
    root = tmp_path / "realdeal"
    for sub in ("data", "training"):
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "data" / "x.py").write_text("from realdeal.training import engine\n")
    (root / "training" / "engine.py").write_text("from ..data import x\n")
    bad = backward_imports(root)
    assert [(i.module, i.target) for i in bad] == [("realdeal.data.x", "realdeal.training")]
    assert layer_of("training") > layer_of("data") and len(LAYERS) > 5
