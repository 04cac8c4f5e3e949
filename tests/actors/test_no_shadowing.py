"""No actor may overwrite an attribute of Pykka's actor or of the supervised base with its own state.

(A feed once stored a threading.Event as ``self._stop``, shadowing Pykka's ``_stop()`` method: the actor
could no longer be stopped.) This reads every ``self.<name> = ...`` in actors/*.py and checks it against the
attributes of ``SupervisedActor`` and everything it inherits.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pykka

from actors.base import SupervisedActor

ACTORS_DIR = Path(__file__).resolve().parents[2] / "actors"
# Attributes the base class expects subclasses (or itself) to assign.
ALLOWED = {"config", "peers", "name", "generation"}


def _reserved() -> set[str]:
    names: set[str] = set()
    for cls in SupervisedActor.__mro__:
        if cls is object:
            continue
        names.update(n for n in vars(cls) if not n.startswith("__"))
    names.update(n for n in dir(pykka.ThreadingActor) if not n.startswith("__"))
    return names - ALLOWED


def _assigned_self_attrs(tree: ast.AST) -> dict[str, set[str]]:
    """class name → attributes assigned through ``self.x = ...`` inside that class."""
    out: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            attrs = out.setdefault(node.name, set())
            for sub in ast.walk(node):
                targets = []
                if isinstance(sub, ast.Assign):
                    targets = sub.targets
                elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
                    targets = [sub.target]
                for t in targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                        attrs.add(t.attr)
    return out


def test_no_actor_shadows_runtime_attributes():
    reserved = _reserved()
    problems = []
    checked = 0
    for path in sorted(ACTORS_DIR.glob("*.py")):
        if path.name == "base.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        module = importlib.import_module(f"actors.{path.stem}")
        for cls, attrs in _assigned_self_attrs(tree).items():
            klass = getattr(module, cls, None)
            if not (isinstance(klass, type) and issubclass(klass, SupervisedActor)):
                continue
            checked += 1
            for attr in sorted(attrs & reserved):
                problems.append(f"{path.name}: {cls} assigns self.{attr}, which the actor runtime defines")
    assert checked >= 8, f"only {checked} actor classes found"
    assert not problems, "\n".join(problems)
