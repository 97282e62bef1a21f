"""forkparts/trace.py: the --trace=process mixin and the modes' vocabulary."""
import os
import re
from types import SimpleNamespace

import pytest

from forkparts import trace
from forkparts.cli import bare_trace, trace_modes
from forkparts.configfile import parse_options


class Correct:
    def sigchld_handler(self):
        return lambda signum, frame: None


def test_trace_modes_are_a_sorted_tuple_and_all_is_both():
    assert trace_modes("process") == ("process",)
    assert trace_modes("http,process") == trace_modes("all") == ("http", "process")
    with pytest.raises(Exception, match="unknown mode 'proc'"):
        trace_modes("proc")


def test_a_bare_trace_never_takes_the_next_argument():
    assert bare_trace(["--trace", "app:x"]) == ["--trace=all", "app:x"]
    assert bare_trace(["--trace=http", "app:x"]) == ["--trace=http", "app:x"]
    assert bare_trace(["app:x", "--", "--trace"]) == ["app:x", "--", "--trace"]
    opts, _ = parse_options(["--trace", "tests.apps:hello"])
    assert (opts.app, opts.trace) == ("tests.apps:hello", ("http", "process"))
    assert parse_options(["tests.apps:hello"])[0].trace == ()


def test_trace_true_in_a_config_file_is_a_bare_trace(tmp_path):
    config = tmp_path / "c.py"
    config.write_text("trace = True\n")
    assert parse_options(["-c", str(config), "tests.apps:hello"])[0].trace == (
        "http", "process")
    config.write_text("trace = False\n")
    assert parse_options(["-c", str(config), "tests.apps:hello"])[0].trace == ()


def test_without_process_mode_the_class_is_untouched():
    for modes in ((), ("http",)):
        assert trace.traced(SimpleNamespace(trace=modes), Correct) is Correct
    cls = trace.traced(SimpleNamespace(trace=("process",)), Correct)
    assert cls.__mro__[1:3] == (trace.ProcessTrace, Correct)


def test_the_exit_line_is_written_before_leaving(capfd):
    from forkparts.logs import Log
    left = []
    leave = trace.exit_traced(Log(), lambda marks, status: left.append(status))
    leave(None, 3)
    err = capfd.readouterr().err
    assert re.fullmatch(r"\d+\.\d{6} \[%d\] exit: status 3\n" % os.getpid(), err)
    assert left == [3]


class RecordingLog:
    def __init__(self):
        self.lines = []

    def trace(self, prefix, text, at=None):
        self.lines.append((at, text))


class ForkWithALateSignal:
    """A fork_child during whose return a SIGCHLD handler runs: as CPython
    may run one between any two bytecodes, also after the fork line's stamp."""
    def __init__(self):
        self.log, self.children = RecordingLog(), {}

    def fork_child(self, sock, addr, data, accepted_at):
        return 4242


def test_a_sigchld_stamped_after_the_fork_line_waits_for_the_next_line(monkeypatch):
    server = trace.traced(SimpleNamespace(trace=("process",)), ForkWithALateSignal)()
    ticks = iter([10.0, 10.5, 11.0])
    server.sigchld_times = [9.0]      # a handler that ran before the fork

    def clock():
        now = next(ticks)
        if now == 10.0:               # the fork line's stamp is being taken...
            server.sigchld_times.append(10.2)   # ...and a handler runs right after
        return now
    monkeypatch.setattr(trace.time, "monotonic", clock)
    server.fork_child(None, ("127.0.0.1", 1), b"", 0.0)
    stamps = [at for at, _ in server.log.lines]
    assert stamps == sorted(stamps) == [9.0, 10.0], server.log.lines
    assert server.sigchld_times == [10.2]   # written before the next line, not this one


def test_a_handler_that_ran_inside_another_does_not_put_its_line_first():
    # The handler that stamped 10.1 was interrupted, before its append, by
    # one that stamped 10.3 (CPython re-enters Python signal handlers).
    server = trace.traced(SimpleNamespace(trace=("process",)), ForkWithALateSignal)()
    server.sigchld_times = [10.3, 10.1]
    server.signals_received(before=10.2)
    server.signals_received()
    assert [at for at, _ in server.log.lines] == [10.1, 10.3]
