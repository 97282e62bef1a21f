"""docs/labs.md quotes the code that makes each exercise's difference: every
quoted excerpt must appear verbatim in the function it names.

The marker: a ```python block in docs/labs.md is an excerpt, and the line just
before it (after blank lines) must end with `path::Qualified.name`: followed by a
colon, e.g.

    Correct, `forkserver.py::Server.fork_child`:

path is a file of the repository (forkserver.py, wsgi_handler.py or forkparts/*.py),
Qualified.name an object in it; its source (inspect.getsource) must contain the
excerpt's lines, consecutively, with one common indentation added (so an excerpt
may be quoted dedented).  An excerpt without the line, or naming something that
does not exist, fails: no quote in the guide goes unchecked.
"""
import importlib
import inspect
import os
import re
import textwrap

import pytest

from tests.conftest import ROOT

GUIDE = os.path.join(ROOT, "docs", "labs.md")
MARKER_RE = re.compile(r"`([\w/]+\.py)::([\w.]+)`:\s*$")
FENCE_RE = re.compile(r"^```python\s*$")
CODE_ROOTS = ("forkserver.py", "wsgi_handler.py", "forkparts/")


def excerpts(text):
    """[(line number, path, name, excerpt)] for every ```python block."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if not FENCE_RE.match(line):
            continue
        end = lines.index("```", i + 1)
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        match = MARKER_RE.search(lines[before]) if before >= 0 else None
        path, name = match.groups() if match else (None, None)
        found.append((i + 1, path, name, "\n".join(lines[i + 1:end])))
    return found


def resolve(path, name):
    """The object ``name`` of the module at ``path``, defined there (not inherited)."""
    assert path.startswith(CODE_ROOTS) and os.path.exists(os.path.join(ROOT, path)), \
        "%s is not a source file of the server" % path
    module = importlib.import_module(path[:-3].replace("/", "."))
    obj = module
    for part in name.split("."):
        obj = inspect.getattr_static(obj, part)
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
    assert getattr(obj, "__qualname__", name) == name, \
        "%s::%s is %s, defined elsewhere" % (path, name, getattr(obj, "__qualname__", obj))
    source_file = inspect.getsourcefile(obj)
    assert os.path.samefile(source_file, os.path.join(ROOT, path)), \
        "%s::%s is defined in %s" % (path, name, source_file)
    return obj


def contains(source, excerpt):
    """Whether the excerpt's lines appear consecutively in source, with one
    common indentation added (blank lines match blank lines)."""
    want = textwrap.dedent(excerpt).rstrip("\n").splitlines()
    have = [line.rstrip() for line in source.splitlines()]
    first = want[0]
    for start, line in enumerate(have):
        indent = line[:len(line) - len(first)]
        if not line.endswith(first) or indent.strip():
            continue
        window = have[start:start + len(want)]
        if window == [(indent + w).rstrip() if w.strip() else "" for w in want]:
            return True
    return False


def guide_excerpts():
    with open(GUIDE) as f:
        return excerpts(f.read())


def test_the_guide_quotes_code_in_every_exercise():
    found = guide_excerpts()
    assert len(found) >= 14, "docs/labs.md quotes only %d excerpts" % len(found)
    with open(GUIDE) as f:
        text = f.read()
    exercises = re.split(r"^## (?=\d+\. )", text, flags=re.M)[1:]
    for exercise in exercises:
        title = exercise.splitlines()[0]
        assert "**Where in the code:**" in exercise, "exercise %s has no 'Where in the code'" % title
        assert "```python" in exercise, "exercise %s quotes no code" % title


@pytest.mark.parametrize("lineno,path,name,excerpt", [
    pytest.param(*found, id="line%d-%s" % (found[0], found[2]))
    for found in guide_excerpts()])
def test_excerpt_appears_verbatim_in_the_function_it_names(lineno, path, name, excerpt):
    assert path, ("docs/labs.md line %d: a ```python block must follow a line ending in "
                  "`path::Qualified.name`:" % lineno)
    source = inspect.getsource(resolve(path, name))
    assert contains(source, excerpt), (
        "docs/labs.md line %d: this excerpt is not in %s::%s:\n%s" % (lineno, path, name, excerpt))


def test_contains_is_strict_about_words_and_order():
    source = "def f():\n    a = 1\n    if a:\n        b = 2\n"
    assert contains(source, "a = 1\nif a:\n    b = 2")
    assert contains(source, "    if a:\n        b = 2\n")
    assert not contains(source, "if a:\nb = 2")          # the indentation inside counts
    assert not contains(source, "if a:\n    a = 1")      # so does the order
    assert not contains(source, "a = 2")


def test_every_test_the_guide_names_exists():
    """Each exercise's *Test:* line names tests that exist (under tests/)."""
    with open(GUIDE) as f:
        text = f.read()
    named = set()
    for line in re.findall(r"^\*Tests?:\*(.*(?:\n(?!\n).*)*)", text, re.M):
        named.update(re.findall(r"`(test_\w+)", line))
    assert len(named) >= 15, named
    defined = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "tests")):
        for name in files:
            if name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    defined.update(re.findall(r"^def (test_\w+)", f.read(), re.M))
    assert not named - defined, "docs/labs.md names tests that do not exist: %s" % sorted(
        named - defined)
