"""forkparts/status.py: the parent's title and --status-file."""
import json
import os
import time

from forkparts.status import STATUS_INTERVAL_SECONDS, TITLE_INTERVAL_SECONDS, Status


class Log:
    def __init__(self):
        self.warnings = []

    def warning(self, text):
        self.warnings.append(text)


def test_the_title_names_the_listeners_and_the_counts():
    titles = []
    status = Status(None, titles.append, ["http://127.0.0.1:8888"], Log())
    status.title_dirty = True
    status.update_title(3, 7, 100.0)
    assert titles == ["forkserver: parent http://127.0.0.1:8888 children=3 high-water=7"]
    assert not status.title_dirty and not status.file_dirty   # no --status-file


def test_the_title_is_due_again_only_after_its_interval():
    """The loop retitles when title_dirty and title_due <= now: a burst of
    forks and reaps rewrites it at most once per TITLE_INTERVAL_SECONDS (each
    rewrite writes pages the last fork shared), the first change after a
    quiet spell at once."""
    titles = []
    status = Status(None, titles.append, ["http://127.0.0.1:8888"], Log())
    assert status.title_due <= time.monotonic()          # a first change: at once
    status.update_title(1, 1, 100.0)
    assert status.title_due == 100.0 + TITLE_INTERVAL_SECONDS
    status.title_dirty = True                             # the next fork
    assert 100.0 + TITLE_INTERVAL_SECONDS / 2 < status.title_due   # not yet
    status.update_title(2, 2, 100.0 + TITLE_INTERVAL_SECONDS)
    assert titles[-1].endswith("children=2 high-water=2") and len(titles) == 2
    assert 0 < TITLE_INTERVAL_SECONDS <= 0.2            # still "at once" to a person


def test_the_status_file_is_json_with_our_pid_and_written_at_most_once_per_interval(tmp_path):
    path = str(tmp_path / "status.json")
    status = Status(path, None, [], Log())
    status.write(children=2, stopping=False)
    first = json.loads(open(path).read())
    assert first["pid"] == os.getpid() and first["children"] == 2 and first["stopping"] is False
    status.file_dirty = True
    status.write(children=5, stopping=True)          # too soon: not rewritten
    assert json.loads(open(path).read())["children"] == 2
    assert status.next_write() <= time.monotonic() + STATUS_INTERVAL_SECONDS


def test_an_unwritable_status_file_is_a_warning_not_a_failure(tmp_path):
    log = Log()
    Status(str(tmp_path / "missing" / "status.json"), None, [], log).write(children=0)
    assert log.warnings and "--status-file" in log.warnings[0]


def test_after_each_title_the_parents_comm_is_its_name_without_spaces():
    """setproctitle makes the title's first 15 bytes the process's comm;
    CPython 3.12+ splits /proc/self/stat at spaces to count threads before
    each fork, and a space in comm made it warn "multi-threaded"."""
    calls = []
    status = Status(None, lambda title: calls.append(("title", title)),
                    ["http://127.0.0.1:8888"], Log(), "my app", lambda comm: calls.append(comm))
    status.update_title(1, 1, 100.0)
    assert calls == [("title", "my app: parent http://127.0.0.1:8888 children=1 high-water=1"),
                     "myapp"]
    status = Status(None, calls.append, [], Log(), "a very long name\twith tabs",
                    set_comm=calls.append)
    status.update_title(0, 0, 100.0)
    assert calls[-1] == "averylongnamewi"
    assert Status(None, None, [], Log(), " ", set_comm=calls.append).comm == "forkserver"


def test_a_proc_name_without_setproctitle_is_a_warning_not_silence():
    """--proc-name (gunicorn's --name) asks for titles, which need the
    optional setproctitle: without it the name was ignored without a word."""
    log = Log()
    Status(None, None, [], log, "myshop")
    (warning,) = log.warnings
    assert "--proc-name 'myshop'" in warning and "pip install setproctitle" in warning
    quiet = Log()
    Status(None, None, [], quiet)                       # the default name: nothing asked
    Status(None, lambda title: None, [], quiet, "myshop")   # titles there: nothing to say
    assert quiet.warnings == []
