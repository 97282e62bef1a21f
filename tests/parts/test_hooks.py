"""forkparts/hooks.py: gunicorn's hook forms, forkserver's old ones found and
adapted, the objects hooks get; HookCalls.run_hook, the one place hooks are
called (the signals' hooks, on_reload, pre_exec and nworkers_changed, are
called through it with gunicorn's arguments).  End to end:
tests/test_gunicorn_conf.py and tests/test_hooks.py."""
import types

import pytest

from forkparts.hooks import (CHILD_HOOKS, HOOKS, HookCalls, HookRequest, Settings, Worker,
                             make_hooks)
from forkparts.parser import parse_head
from forkparts.http11 import Limits


class Log:
    def __init__(self):
        self.lines = []

    def exception(self, text):
        self.lines.append(text)


def supervisor_with(functions):
    """Just what run_hook reads of the server it is mixed into."""
    hooks, warnings = make_hooks(functions, "test")
    stub = types.SimpleNamespace(hooks=hooks, log=Log())
    return stub, warnings


def run_hook(stub, name, *args):
    return HookCalls.run_hook(stub, name, *args)


def test_every_gunicorn_hook_is_known_with_its_process():
    assert set(HOOKS) == {
        "on_starting", "on_reload", "when_ready", "pre_exec", "pre_fork", "post_fork",
        "post_worker_init", "pre_request", "post_request", "child_exit", "worker_exit",
        "worker_int", "worker_abort", "nworkers_changed", "on_exit"}
    assert CHILD_HOOKS == {"post_fork", "post_worker_init", "pre_request", "post_request",
                           "worker_exit", "worker_int", "worker_abort"}


@pytest.mark.parametrize("name, args", [
    ("on_reload", ("SERVER",)),
    ("pre_exec", ("SERVER",)),
    ("nworkers_changed", ("SERVER", 5, 4)),
])
def test_the_signals_hooks_are_called_through_run_hook_with_gunicorns_arguments(name, args):
    calls = []
    stub, warnings = supervisor_with({name: lambda *a: calls.append(a)})
    assert run_hook(stub, name, *args) is True
    assert calls == [args] and warnings == []


def test_an_undefined_hook_is_no_call_and_counts_as_success():
    stub, _ = supervisor_with({})
    assert run_hook(stub, "on_reload", "SERVER") is True


def test_a_raising_hook_is_logged_by_name_and_reported_false():
    def on_reload(server):
        raise RuntimeError("no")
    stub, _ = supervisor_with({"on_reload": on_reload})
    assert run_hook(stub, "on_reload", "SERVER") is False
    assert stub.log.lines == ["hook on_reload failed"]


def test_old_forms_are_found_warned_once_and_given_their_old_arguments():
    calls = []

    def pre_fork(server):
        calls.append(("pre_fork", server))

    def post_fork(server, child_pid):
        calls.append(("post_fork", server, child_pid))

    def child_exit(server, pid, status):
        calls.append(("child_exit", server, pid, status))
    stub, warnings = supervisor_with(dict(pre_fork=pre_fork, post_fork=post_fork,
                                          child_exit=child_exit))
    assert len(warnings) == 3
    assert all("old form, deprecated" in w for w in warnings)
    worker = Worker(42, 1, 3, None, status=256)
    run_hook(stub, "pre_fork", "S", Worker(None, 1, 3, None))
    run_hook(stub, "post_fork", "S", worker)
    run_hook(stub, "child_exit", "S", worker)
    assert calls == [("pre_fork", "S"), ("post_fork", "S", 42), ("child_exit", "S", 42, 256)]


def test_gunicorn_forms_are_not_taken_for_old_ones():
    hooks, warnings = make_hooks({
        "pre_fork": lambda server, worker: None,
        "post_fork": lambda server, worker: None,
        "child_exit": lambda server, worker: None,
        "post_request": lambda *args: None}, "test")
    assert warnings == [] and all(h.adapt is None for h in hooks.values())


def test_a_gunicorn_form_with_an_optional_parameter_is_not_taken_for_an_old_one():
    """child_exit(server, worker, verbose=False) has three parameters, as the
    old (server, pid, status) did, but a call needs two: it is gunicorn's."""
    calls = []

    def child_exit(server, worker, verbose=False):
        calls.append((server, worker.pid, verbose))
    stub, warnings = supervisor_with({"child_exit": child_exit})
    assert warnings == []
    run_hook(stub, "child_exit", "S", Worker(42, 1, 3, None, status=0))
    assert calls == [("S", 42, False)]


def test_server_cfg_reads_settings_by_gunicorns_names_and_is_read_only():
    opts = types.SimpleNamespace(access_log="/a", error_log="-", log_level="debug",
                                 app="m:app", timeout=5.0, bind=["127.0.0.1:0"])
    cfg = Settings(opts)
    assert (cfg.accesslog, cfg.errorlog, cfg.loglevel, cfg.wsgi_app) == ("/a", "-", "debug",
                                                                         "m:app")
    assert cfg.timeout == 5.0 and cfg.bind == ["127.0.0.1:0"]
    with pytest.raises(AttributeError):
        cfg.no_such_setting
    with pytest.raises(AttributeError):
        cfg.timeout = 3


def test_req_has_gunicorns_request_attributes():
    request = parse_head(b"POST /a/b?x=1 HTTP/1.0\r\nHost: h\r\nX-Id: 7\r\n"
                         b"Content-Length: 0\r\n\r\n", Limits())
    req = HookRequest(request)
    assert (req.method, req.uri, req.path, req.query) == ("POST", "/a/b?x=1", "/a/b", "x=1")
    assert req.version == (1, 0)
    assert ("X-ID", "7") in req.headers


def test_operations_doc_names_every_hook_and_its_process():
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "docs", "operations.md")) as f:
        text = f.read()
    section = text.split("## gunicorn's config file and hooks")[1].split("\n## ")[0]
    rows = dict(re.findall(r"^\| `(\w+)\([^)]*\)` \| (parent|child) \|", section, re.M))
    assert rows == {name: where for name, (where, _) in HOOKS.items()}


# ------------------------------------------- signatures checked at load (make_hooks)

def problems_of(functions):
    try:
        make_hooks(functions, "config file 'c.py'")
    except ValueError as exc:
        return str(exc).splitlines()
    return []


@pytest.mark.parametrize("name, function, wanted", [
    ("post_fork", lambda a, b, c, d: None, "missing a required argument: 'c'"),
    ("pre_request", lambda w: None, "pre_request(worker, req): too many positional"),
    ("child_exit", lambda server: None, "child_exit(server, worker): too many positional"),
    ("post_request", lambda worker: None, "post_request(worker, req, environ, resp)"),
    ("on_exit", lambda server, *, now: None, "missing a required argument: 'now'"),
    ("worker_int", None, "worker_int must be a function taking (worker), not None"),
    ("nworkers_changed", lambda server, new: None,
     "nworkers_changed(server, new_value, old_value): too many positional"),
])
def test_a_hook_the_server_cannot_call_is_refused_naming_both_sides(name, function, wanted):
    problems = problems_of({name: function})
    assert len(problems) == 1
    assert problems[0].startswith("config file 'c.py': hook %s" % name)
    # Python 3.12 says "missing a required keyword-only argument", 3.11 without.
    assert wanted in problems[0].replace("keyword-only argument", "argument")


def test_every_arity_gunicorn_gives_is_accepted_as_the_server_passes_it():
    """What each run_hook call in forkserver.py passes, hook by hook."""
    def takes(count):
        return {1: lambda a: None, 2: lambda a, b: None, 3: lambda a, b, c: None,
                4: lambda a, b, c, d: None}[count]
    functions = {name: takes(len(params)) for name, (_, params) in HOOKS.items()}
    assert problems_of(functions) == []


@pytest.mark.parametrize("function", [
    lambda server, worker=None, extra=None: None,       # defaults
    lambda *args: None,
    lambda server, *args, **kwargs: None,
    lambda server, worker, *, flag=False: None,         # an optional keyword-only
    print,                                              # C, its signature read
    max,                                                # C, no signature: trusted
])
def test_defaults_varargs_keyword_only_and_builtins_are_accepted(function):
    assert problems_of({"post_fork": function}) == []


@pytest.mark.parametrize("function, gets", [
    (lambda worker, req: None, ("W", "R")),
    (lambda worker, req, environ: None, ("W", "R", "E")),
    (lambda worker, req, environ, resp: None, ("W", "R", "E", "P")),
    (lambda *args: None, ("W", "R", "E", "P")),
])
def test_post_request_takes_gunicorns_two_to_four_arguments(function, gets):
    calls = []
    stub, warnings = supervisor_with({"post_request": function})
    stub.hooks["post_request"].function = lambda *a: calls.append(a)   # records what it got
    assert run_hook(stub, "post_request", "W", "R", "E", "P") is True
    assert calls == [gets] and warnings == []
