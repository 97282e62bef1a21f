"""forkparts/apps.py: --reload's source watcher, the thread warning, app specs
as gunicorn takes them (parsed with ast, never evaluated), --env."""
import os
import sys
import threading
import time

import pytest

import forkparts.apps as apps
from forkparts.apps import AppLoadError, SourceWatcher, parse_app_spec, warn_about_threads


class Loader:
    def __init__(self, path):
        self.path = path

    def source_mtimes(self):
        return {self.path: os.stat(self.path).st_mtime}


def test_the_watcher_names_a_changed_file_once_per_poll(tmp_path, monkeypatch):
    monkeypatch.setattr(apps, "RELOAD_POLL_SECONDS", 0.0)
    source = tmp_path / "app.py"
    source.write_text("x = 1\n")
    watcher = SourceWatcher(Loader(str(source)))
    assert not watcher.changed()
    os.utime(source, (time.time() + 10, time.time() + 10))
    assert watcher.changed() and watcher.changed_name == "app.py"
    assert not watcher.changed()   # the new mtime is now the known one



class GrowingLoader:
    """The app's files: ``paths``, a list the test extends as the app imports more."""
    def __init__(self, paths):
        self.paths = paths

    def source_mtimes(self):
        return {path: os.stat(path).st_mtime for path in self.paths}


def test_the_watcher_watches_a_file_first_imported_after_it_started(tmp_path, monkeypatch):
    monkeypatch.setattr(apps, "RELOAD_POLL_SECONDS", 0.0)
    first, later = tmp_path / "app.py", tmp_path / "views.py"
    first.write_text("x = 1\n")
    later.write_text("y = 1\n")
    loader = GrowingLoader([str(first)])
    watcher = SourceWatcher(loader)
    loader.paths.append(str(later))          # imported by the warm-up's request
    assert not watcher.changed()             # first seen: its mtime now is the known one
    os.utime(later, (time.time() + 10, time.time() + 10))
    assert watcher.changed() and watcher.changed_name == "views.py"


def test_only_the_apps_own_modules_are_reimported(tmp_path, monkeypatch):
    """A module recorded by an installer (a RECORD in its sys.path directory:
    pip install --target) is a library's; a loose file there is the app's."""
    vendor, app_dir = tmp_path / "vendor", tmp_path / "app"
    (vendor / "recordedlib-1.0.dist-info").mkdir(parents=True)
    (vendor / "recordedlib-1.0.dist-info" / "RECORD").write_text(
        "recordedlib.py,sha256=x,1\nrecordedlib-1.0.dist-info/RECORD,,\n")
    (vendor / "recordedlib.py").write_text("X = 1\n")
    (vendor / "looselib.py").write_text("X = 1\n")
    app_dir.mkdir()
    (app_dir / "ownapp.py").write_text("import recordedlib, looselib\napp = len\n")
    monkeypatch.setattr("sys.path", [str(app_dir), str(vendor)] + sys.path)
    loader = apps.AppLoader("ownapp:app")
    try:
        assert loader.load() is len
        assert sorted(loader.user_modules()) == ["looselib", "ownapp"]
    finally:
        for name in ("ownapp", "recordedlib", "looselib"):
            sys.modules.pop(name, None)


class Log:
    def __init__(self):
        self.warnings = []

    def warning(self, text):
        self.warnings.append(text)


def test_a_thread_started_at_import_is_named_in_one_warning():
    log, stop = Log(), threading.Event()
    thread = threading.Thread(target=stop.wait, name="pool-refresher")
    thread.start()
    try:
        warn_about_threads(log)
    finally:
        stop.set()
        thread.join()
    assert len(log.warnings) == 1 and "pool-refresher" in log.warnings[0]
    warn_about_threads(log)
    assert len(log.warnings) == 1


# ------------------------------------------------ app specs, gunicorn's forms


@pytest.mark.parametrize("spec, parsed", [
    ("mod", ("mod", "application", None)),               # gunicorn's util.import_app
    ("pkg.mod:app", ("pkg.mod", "app", None)),
    ("mod:obj.wsgi", ("mod", "obj.wsgi", None)),
    ("mod:create()", ("mod", "create", ([], {}))),
    ("mod:create('arg', key=1)", ("mod", "create", (["arg"], {"key": 1}))),
    ("mod:create(1, -2.5, None, True, (1, 'a'), [b'x'], {'k': {1, 2}})",
     ("mod", "create", ([1, -2.5, None, True, (1, "a"), [b"x"], {"k": {1, 2}}], {}))),
    ("mod: create( 'a' ) ", ("mod", "create", (["a"], {}))),
])
def test_app_specs_parse_as_gunicorns(spec, parsed):
    assert parse_app_spec(spec) == parsed


@pytest.mark.parametrize("spec, words", [
    ("mod:create(x)", "must be literals"),                 # a name is no literal
    ("mod:create(open('/etc/passwd'))", "must be literals"),
    ("mod:create(*args)", "must be literals"),
    ("mod:create(**{'a': 1})", "must be literals"),
    ("mod:create(1 + 2j if True else 0)", "must be literals"),
    ("mod:__import__('os').system('id')", "expected a name or a call"),
    ("mod:create()()", "expected a name or a call"),
    ("mod:lambda: 1", "expected a name or a call"),
    ("mod:[1]", "expected a name or a call"),
    ("mod:", "expected MODULE"),
    ("mod.:app", "expected MODULE"),
    ("1mod:app", "expected MODULE"),
    ("", "expected MODULE"),
])
def test_app_specs_that_are_not_names_or_literal_calls_are_refused(spec, words):
    with pytest.raises(AppLoadError) as info:
        parse_app_spec(spec)
    assert words in str(info.value) and repr(spec) in str(info.value)


def test_parsing_a_spec_never_evaluates_it(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    spec = "mod:create(open(%r, 'w'))" % str(marker)
    with pytest.raises(AppLoadError):
        parse_app_spec(spec)
    assert not marker.exists()


def test_env_pairs_go_to_the_environment(monkeypatch):
    import types
    from forkparts.apps import apply_env
    monkeypatch.delenv("FS_TEST_A", raising=False)
    apply_env(types.SimpleNamespace(raw_env=["FS_TEST_A=1=2"]))
    assert os.environ["FS_TEST_A"] == "1=2"
    monkeypatch.delenv("FS_TEST_A")
