"""forkparts/apps.py: --reload's source watcher and the thread warning."""
import os
import threading
import time

import forkparts.apps as apps
from forkparts.apps import SourceWatcher, warn_about_threads


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
