"""The house (DESIGN.md, issue 15): two front doors, a package of parts, one
import direction, and sizes a reader can hold in mind.

Imports are read from the source (every import statement, also those inside
functions), so a lazy import cannot hide a circle or a part reaching back
into a front door.
"""
import ast
import os

import pytest

from tests.conftest import ROOT

FRONT_DOORS = ("forkserver", "wsgi_handler")
PACKAGE = "forkparts"
MAX_FUNCTION_LINES = 40
MAX_CLASS_LINES = 300
MAX_MODULE_LINES = 900


def parts():
    folder = os.path.join(ROOT, PACKAGE)
    return sorted(PACKAGE + "." + name[:-3] for name in os.listdir(folder)
                  if name.endswith(".py") and name != "__init__.py")


def source_path(module):
    if module in FRONT_DOORS:
        return os.path.join(ROOT, module + ".py")
    return os.path.join(ROOT, *module.split(".")) + ".py"


def tree(module):
    with open(source_path(module)) as f:
        return ast.parse(f.read())


def our_imports(module):
    """The modules of this project that ``module`` imports, anywhere in it."""
    ours = set(FRONT_DOORS) | {PACKAGE} | set(parts())
    found = set()
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [node.module + "." + a.name for a in node.names]
        else:
            continue
        found.update(name for name in names if name in ours and name != module)
    return found


def test_the_package_has_its_parts():
    assert len(parts()) >= 10, parts()


@pytest.mark.parametrize("part", parts())
def test_a_part_never_imports_a_front_door(part):
    assert not our_imports(part) & set(FRONT_DOORS), (
        "%s imports a front door: imports go forkserver -> wsgi_handler -> parts" % part)


def test_wsgi_handler_never_imports_forkserver():
    assert "forkserver" not in our_imports("wsgi_handler")


def test_no_import_circle_anywhere():
    graph = {module: our_imports(module) - {PACKAGE}
             for module in list(FRONT_DOORS) + parts()}
    done, path = set(), []

    def visit(module):
        if module in path:
            cycle = path[path.index(module):] + [module]
            pytest.fail("import circle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        path.pop()
        done.add(module)
    for module in graph:
        visit(module)


def sized(module):
    """(kind, qualified name, lines) of every class and function in ``module``."""
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                name = prefix + child.name
                out.append((kind, name, child.end_lineno - child.lineno + 1))
                walk(child, name + ".")
    walk(tree(module), "")
    return out


@pytest.mark.parametrize("module", list(FRONT_DOORS) + parts())
def test_sizes_a_reader_can_hold(module):
    with open(source_path(module)) as f:
        lines = sum(1 for _ in f)
    assert lines <= MAX_MODULE_LINES, "%s has %d lines" % (module, lines)
    limits = {"function": MAX_FUNCTION_LINES, "class": MAX_CLASS_LINES}
    too_big = ["%s %s: %d lines" % (kind, name, n) for kind, name, n in sized(module)
               if n > limits[kind]]
    assert not too_big, too_big


def test_the_tutorials_lines_are_in_the_front_door():
    """accept -> fork -> close -> reap: a reader finds them in forkserver.py."""
    with open(source_path("forkserver")) as f:
        text = f.read()
    server = next(node for node in tree("forkserver").body
                  if isinstance(node, ast.ClassDef) and node.name == "Server")
    methods = {node.name: ast.get_source_segment(text, node) for node in server.body
               if isinstance(node, ast.FunctionDef)}
    assert "listener.accept()" in methods["accept_from"]
    assert "os.fork()" in methods["fork_child"]
    assert "self.close_client(sock)" in methods["fork_child"]
    assert "close_client = staticmethod(close_socket)" in text
    assert "in exited_children():" in methods["reap_children"]
    with open(source_path("forkparts.children")) as f:
        assert "os.waitpid(-1, os.WNOHANG)" in f.read()
