"""The tree drawn in the errors module's docstring is the real class hierarchy."""

from __future__ import annotations

import inspect
import re

from ambrosia_edge import errors

#: A line of the drawing: the branches (4 characters a level), then a class name.
LINE = re.compile(r"^(?P<branches>(?:[│ ]   |[├└]── )*)(?P<name>[A-Z]\w+)\b")


def drawn_tree() -> dict[str, str | None]:
    """Each class drawn in the docstring, with the class drawn as its parent (None at a root)."""
    doc = errors.__doc__ or ""
    drawing = doc.split("::", 1)[1].split("\n\n")[1]  # the indented block after "::"
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for line in drawing.splitlines():
        match = LINE.match(line.removeprefix("    "))
        assert match, f"not a line of the tree: {line!r}"
        depth = len(match["branches"]) // 4
        assert depth <= len(path), f"{match['name']} is drawn below nothing"
        del path[depth:]
        parents[match["name"]] = path[-1] if path else None
        path.append(match["name"])
    return parents


def defined() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == errors.__name__
    }


def test_every_error_is_drawn_once_and_nothing_else() -> None:
    assert sorted(drawn_tree()) == sorted(defined())


def test_each_drawn_parent_is_the_real_base_class() -> None:
    classes = defined()
    for name, parent in drawn_tree().items():
        base = classes[name].__mro__[1]
        if parent is None:
            assert base is Exception, f"{name} is drawn as a root but derives from {base}"
        else:
            assert base is classes[parent], f"{name} is drawn under {parent}, derives from {base}"


def test_there_is_one_root() -> None:
    roots = [name for name, parent in drawn_tree().items() if parent is None]
    assert roots == ["AmbrosiaError"]
    assert all(issubclass(cls, errors.AmbrosiaError) for cls in defined().values())


def test_no_two_classes_set_the_same_code() -> None:
    own = [cls.__dict__["code"] for cls in defined().values() if "code" in cls.__dict__]
    assert len(own) == len(set(own))
