"""Server hooks: gunicorn's names, signatures and objects, for one process
per connection.

DESIGN note: a gunicorn.conf.py's hooks run here unchanged.  gunicorn calls
them with its arbiter (``server``: pid, cfg, log) and a worker (pid, ppid,
age, log); a forked child here plays the worker for its one connection, so
each hook runs in the process where its gunicorn counterpart's work happens
(HOOKS says which).  The parent's object is the Server itself (it carries
pid, cfg, log); the Worker below is made in the child right after fork, or
in the parent for pre_fork and child_exit.  The forkserver-only forms of
three hooks (parameters named ``child_pid``/``pid``, or a one-parameter
pre_fork) still work for now: they are found once at start (OLD_FORMS), get
a deprecation warning, and HookCalls.run_hook, the one place hooks are
called, turns gunicorn's arguments into theirs.  A room of its own because
it is the one place that knows what each hook means here, and it is read
by the config file, the parent and the child alike.  A hook that is not
defined costs nothing: its call sites test for it once, at start.  A hook
the server could not call (not callable, or parameters that do not bind
the arguments run_hook passes: HOOKS, after OLD_FORMS and SHORT_FORMS) is
refused at load, as gunicorn's validate_callable does, so --check-config
finds it, not every request.
"""

import os
import signal
import time

from forkparts.exits import ServerSignal
from forkparts.http11 import error_response

PARENT, CHILD = "parent", "child"

# gunicorn's hooks: where each runs here, and gunicorn's parameters
# (docs.gunicorn.org, "Server Hooks"; gunicorn/config.py).
HOOKS = {
    "on_starting": (PARENT, ("server",)),
    "on_reload": (PARENT, ("server",)),
    "when_ready": (PARENT, ("server",)),
    "pre_exec": (PARENT, ("server",)),
    "pre_fork": (PARENT, ("server", "worker")),
    "post_fork": (CHILD, ("server", "worker")),
    "post_worker_init": (CHILD, ("worker",)),
    "worker_int": (CHILD, ("worker",)),
    "worker_abort": (CHILD, ("worker",)),
    "pre_request": (CHILD, ("worker", "req")),
    "post_request": (CHILD, ("worker", "req", "environ", "resp")),
    "child_exit": (PARENT, ("server", "worker")),
    "worker_exit": (CHILD, ("server", "worker")),
    "nworkers_changed": (PARENT, ("server", "new_value", "old_value")),
    "on_exit": (PARENT, ("server",)),
}
# Hooks a child runs: the parent hands a child start-up work only if one is set.
CHILD_HOOKS = frozenset(name for name, (where, _) in HOOKS.items() if where == CHILD)

# gunicorn's hooks that cannot be honoured here: refused at start.
REFUSED_HOOKS = {
    "ssl_context": "TLS is not served by forkserver: terminate it in the proxy in front "
                   "(docs/deploy.md)",
    "on_dirty_starting": "forkserver has no dirty arbiter",
    "dirty_post_fork": "forkserver has no dirty arbiter",
    "dirty_worker_init": "forkserver has no dirty arbiter",
    "dirty_worker_exit": "forkserver has no dirty arbiter",
}

# forkserver's own earlier forms, deprecated: (how to recognise one, the
# old form's text, the arguments it gets from gunicorn's).
OLD_FORMS = {
    "pre_fork": (lambda params: len(params) == 1, "pre_fork(server)",
                 lambda server, worker: (server,)),
    "post_fork": (lambda params: len(params) == 2 and params[1] in ("pid", "child_pid"),
                  "post_fork(server, child_pid)", lambda server, worker: (server, worker.pid)),
    "child_exit": (lambda params: len(params) == 3 or "pid" in params[1:2],
                   "child_exit(server, pid, status)",
                   lambda server, worker: (server, worker.pid, worker.status)),
}


class Hook:
    """One hook from the config file: the function, and for a deprecated
    form the function that makes its arguments from gunicorn's."""
    __slots__ = ("name", "function", "adapt")

    def __init__(self, name, function, adapt=None):
        self.name, self.function, self.adapt = name, function, adapt


# gunicorn's shorter forms of post_request (its validate_post_request): one
# taking (worker, req) or (worker, req, environ) gets that many of the
# server's arguments, by its number of positional parameters as gunicorn counts.
SHORT_FORMS = {"post_request": (2, 3)}


def positional_parameters(function, required=False):
    """The names of ``function``'s positional parameters (only those without
    a default if ``required``), or None for *args or an unreadable signature."""
    import inspect
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):   # a builtin without a signature: take it as gunicorn's
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            and not (required and p.default is not p.empty)]


def make_hooks(functions, where):
    """{name: function} -> ({name: Hook}, deprecation warnings), one warning
    per hook written in forkserver's old form.  Raises ValueError, one line
    per hook the server could not call (not callable, or its parameters do
    not take the server's arguments), so it is found at load, not per call."""
    hooks, warnings, problems = {}, [], []
    for name, function in functions.items():
        hooks[name], old = make_hook(name, function)
        problem = call_problem(hooks[name])
        if problem:
            problems.append("%s: hook %s" % (where, problem))
        elif old:
            warnings.append(
                "%s: hook %s is forkserver's old form, deprecated: it is still called so "
                "for now; write gunicorn's %s(%s) (worker.pid, worker.status)" % (
                    where, old, name, ", ".join(HOOKS[name][1])))
    if problems:
        raise ValueError("\n".join(problems))
    return hooks, warnings


def make_hook(name, function):
    """(Hook, the old form's text or None): how the server calls ``function``
    set as hook ``name``."""
    old = OLD_FORMS.get(name)
    params = positional_parameters(function) if callable(function) else None
    # An old form by the parameters a call must fill: child_exit(server,
    # worker, verbose=False) is gunicorn's, not (server, pid, status).
    required = positional_parameters(function, required=True) if params is not None else None
    if old and required is not None and old[0](required):
        return Hook(name, function, old[2]), old[1]
    if params is not None and len(params) in SHORT_FORMS.get(name, ()):
        return Hook(name, function, lambda *args, count=len(params): args[:count]), None
    return Hook(name, function), None


class Passed(str):
    """A stand-in for one of the server's arguments, named like it, so the
    arguments a hook gets can be bound to its signature and shown."""

    def __getattr__(self, attribute):   # worker.pid, for the old forms
        return Passed("%s.%s" % (self, attribute))


def call_problem(hook):
    """None if the server's arguments bind to the hook's parameters (so
    defaults, *args and keyword-only parameters count as in a call), else
    what it takes and what the server passes.  A callable whose signature
    cannot be read (a builtin, C code) is taken on trust."""
    import inspect
    passed = HOOKS[hook.name][1]
    if not callable(hook.function):
        return "%s must be a function taking (%s), not %r (type %s)" % (
            hook.name, ", ".join(passed), hook.function, type(hook.function).__name__)
    try:
        signature = inspect.signature(hook.function)
    except (TypeError, ValueError):
        return None
    args = tuple(map(Passed, passed))
    args = hook.adapt(*args) if hook.adapt else args
    try:
        signature.bind(*args)
    except TypeError as exc:
        return "%s%s%s cannot be called as the server calls it, %s(%s): %s" % (
            hook.name, signature, defined_at(hook.function), hook.name, ", ".join(args), exc)
    return None


def defined_at(function):
    """" (FILE:LINE)" of a function's definition, or "" if it has none."""
    code = getattr(function, "__code__", None)
    return " (%s:%d)" % (code.co_filename, code.co_firstlineno) if code else ""


class Worker:
    """What gunicorn's hooks get as ``worker``: the child serving one
    connection (pid, ppid, age: its connection's number since start, log),
    with gunicorn's cfg, timeout, alive, booted, aborted; ``status`` is the
    wait status once the parent has reaped it (child_exit)."""

    def __init__(self, pid, ppid, age, log, cfg=None, timeout=0.0, status=None):
        self.pid, self.ppid, self.age, self.log = pid, ppid, age, log
        self.cfg, self.timeout, self.status = cfg, timeout, status
        self.alive, self.booted, self.aborted = True, pid is not None, False
        self.nr = 0                    # requests served, as gunicorn's
        self.started = time.monotonic()

    def __repr__(self):
        return "<Worker %s>" % self.pid


class Settings:
    """What gunicorn's hooks get as ``server.cfg``: the effective settings,
    by gunicorn's names (cfg.bind, cfg.workers...) or forkserver's."""

    GUNICORN_NAMES = {"accesslog": "access_log", "errorlog": "error_log",
                      "loglevel": "log_level", "wsgi_app": "app", "keepalive": "keep_alive",
                      "workers": "max_children", "env": "raw_env"}

    def __init__(self, opts):
        object.__setattr__(self, "opts", opts)

    def __getattr__(self, name):
        try:
            return getattr(self.opts, self.GUNICORN_NAMES.get(name, name))
        except AttributeError:
            raise AttributeError("no setting %r" % name) from None

    def __setattr__(self, name, value):
        raise AttributeError("settings are read-only")


class HookRequest:
    """pre_request/post_request's ``req``: gunicorn's Request attributes
    (method, uri, path, query, version, headers as upper-cased names)."""

    def __init__(self, request):
        self.method, self.uri = request.method, request.target
        self.path, self.query = request.path, request.query
        self.version = request.version        # (1, 1), as gunicorn's
        self.headers = [(name.upper(), value) for name, value in request.headers]
        self.scheme = "http"
        self.fragment = ""


class HookResponse:
    """post_request's ``resp``: gunicorn's Response attributes."""

    def __init__(self, response):
        failed = response.failed   # the status really sent when the app failed
        self.status_code = failed or (response.status_code() if response.status else 500)
        self.status = "%d" % failed if failed else response.status
        self.headers = list(response.headers or ())
        self.sent = response.sent_body
        self.version = "HTTP/1.1"


class HookCalls:
    """How the hooks are called, in the parent and in a child (child_start,
    child_end): mixed into forkserver's Supervisor, which is gunicorn's
    ``server`` here and holds ``hooks``, ``log``, ``opts``, ``served`` and,
    in a child, its ``worker``."""

    def run_hook(self, name, *args):
        """Call hook ``name`` with gunicorn's arguments: the one place hooks
        are called.  A hook in forkserver's old form gets its old arguments
        (hooks.OLD_FORMS).  A hook that raises anything (``sys.exit()``, a
        KeyboardInterrupt or CancelledError of its own too) is logged by name;
        False then.  What the server raises into a hook from a signal of its
        own (exits.ServerSignal: the child's --timeout, --limit-cpu, a stop
        before the ready line) goes on through it: caught as the hook's, a
        slow pre_request ran the app past its deadline."""
        hook = self.hooks.get(name)
        if hook is None:
            return True
        try:
            hook.function(*(hook.adapt(*args) if hook.adapt else args))
            return True
        except ServerSignal:
            raise
        except BaseException:
            self.log.exception("hook %s failed" % name)
            return False

    @property
    def num_workers(self):
        """gunicorn's server.num_workers: here the most live children."""
        return self.opts.max_children

    def request_hooks(self):
        """pre_request and post_request for the child's handler, or None each:
        an undefined one costs a request nothing."""
        return (self.pre_request if "pre_request" in self.hooks else None,
                self.post_request if "post_request" in self.hooks else None)

    def pre_request(self, request):
        if self.worker is not None:   # None: --prewarm's request, in the parent
            self.worker.nr += 1
            self.run_hook("pre_request", self.worker, HookRequest(request))

    def post_request(self, request, environ, response):
        if self.worker is not None:
            self.run_hook("post_request", self.worker, HookRequest(request), environ,
                          HookResponse(response))

    def child_start(self, sock):
        """In the child, with the child's hooks: its worker, worker_int and
        worker_abort armed, post_fork (raising: 500 and exit status 5; its
        --timeout: 500, then TimedOut goes on), post_worker_init.  False if
        post_fork raised."""
        self.worker = worker = worker_for_child(self, self.served + 1)
        if "worker_int" in self.hooks:
            on_child_signals((signal.SIGINT, signal.SIGQUIT),
                             lambda: self.run_hook("worker_int", worker))
        if "worker_abort" in self.hooks:   # SIGALRM: the child's own --timeout
            on_child_signals((signal.SIGABRT, signal.SIGALRM),
                             lambda: self.run_hook("worker_abort", worker))
        ok = done = False
        try:
            ok = self.run_hook("post_fork", self, worker)
            if ok:
                self.run_hook("post_worker_init", worker)
            done = True
        finally:   # post_fork raised (logged), or --timeout came in a hook (logged at the end)
            if not (ok and done):
                self.log.error("hook %s did not finish: answering 500"
                               % ("post_worker_init" if ok else "post_fork"))
                try:
                    sock.sendall(error_response(500))
                except OSError:
                    pass
        return ok

    def child_end(self):
        """In the child, just before its _exit: worker_exit."""
        if self.worker is not None:
            self.worker.alive = False
            self.run_hook("worker_exit", self, self.worker)


def on_child_signals(signums, call):
    """worker_int/worker_abort in a child: run ``call`` on the signal, then
    let the signal do what it did without the hook (the handler the child
    had is put back and the signal raised again), so a hook never changes
    how a child ends."""
    for signum in signums:
        before = signal.getsignal(signum)

        def handler(sig, frame, before=before):
            call()
            signal.signal(sig, before if before is not None else signal.SIG_DFL)
            signal.raise_signal(sig)
        signal.signal(signum, handler)


def worker_for_child(server, age):
    """The ``worker`` of the child just forked (called in the child)."""
    opts = server.opts
    return Worker(os.getpid(), server.pid, age, server.log, server.cfg, opts.timeout)
