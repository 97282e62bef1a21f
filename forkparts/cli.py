"""The command line: the argparse parser, its option groups and converters.

DESIGN note: every option, its default and its help text is declared here,
once; the config file (forkparts/configfile.py) reads its settings through
the same parser, so a setting is checked as its option is.  gunicorn's
flags are here too: its spellings as aliases (-b, -c, --pid, --access-logfile),
its pool options accepted with a warning (POOL_ONLY), and its other flags
refused or ignored with the reason, as a config file's settings are
(forkparts/gunicorn_only.py: FLAGS, NOT_HONOURED).  The
grammar of what the options name (a --bind address, a --prewarm target) is
checked here as the options are read, so a start and --check-config refuse
alike; every usage error is one line (one_line_parser).  A
room of its own because it is the server's whole user-facing vocabulary,
read far more often than it changes, and the parent's loop never needs it
after start.
"""

import os
import re

from forkparts import __version__
from forkparts.gunicorn_only import FLAGS, flag_verdict
# The child's defaults and vocabulary, shown in the help and checked here.
from forkparts.http11 import (HEADER_TIMEOUT_SECONDS, MAX_BODY_BYTES, MAX_CHUNK_LINE_BYTES,
                              MAX_FIELD_BYTES, MAX_HEAD_BYTES, MAX_HEADER_FIELDS,
                              MAX_REQUEST_LINE_BYTES, MIN_BODY_RATE, READ_TIMEOUT_SECONDS)
from forkparts.logs import COMMON_LOG_FORMAT, LEVELS
from forkparts.proxy import DEFAULT_FORWARDING_FAMILY, FORWARDING_FAMILIES

DEFAULT_BIND = "127.0.0.1:8888"     # the tutorial's port, on loopback only
# Linux caps this at net.core.somaxconn (4096 on current kernels).  The stdlib's
# 5 drops connections at 64 concurrent clients.
DEFAULT_BACKLOG = 1024
# httpd prefork allows 256 workers, socketserver.ForkingMixIn 40.  Slow clients
# do not hold a child here (the accept filter parks them in the parent until
# their head is complete), so every child is doing app work: 256 of them is
# already far more than 2 cores can run, and at ~3 MB private memory each a
# full house stays under 1 GB.  docs/operations.md has the reasoning.
DEFAULT_MAX_CHILDREN = 256
DEFAULT_TIMEOUT_SECONDS = 30.0           # as gunicorn's --timeout
DEFAULT_GRACEFUL_TIMEOUT_SECONDS = 30.0  # as gunicorn's --graceful-timeout
DEFAULT_MAX_PENDING = 1024               # connections parked in the accept filter
TRACE_MODES = ("http", "process")        # --trace's modes; a bare --trace is all of them


class UsageError(Exception):
    """A bad option, address or config file: exit status 2."""


def one_line_parser(**kwargs):
    """argparse's parser, whose errors are one line, ``forkserver: error: <what>
    (see --help)``, exit status 2, as every other usage error of the server:
    argparse's own print the whole usage block first (29 lines for one bad
    number), which buries the line that says what is wrong."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            usage_exit("%s: error: %s (see --help)\n" % (self.prog, message))
    return Parser(**kwargs)


# Where a usage error's words go besides stderr: a HUP's new code puts the
# old code's error log here while it reads its options, before its own log
# is open (forkparts/reexec.py, Carried.reading_options).
USAGE_ERROR_ECHOES = []


def usage_exit(text):
    """Exit status 2, ``text`` on stderr and to each of USAGE_ERROR_ECHOES."""
    import sys
    sys.stderr.write(text)
    for echo in USAGE_ERROR_ECHOES:
        echo(text)
    sys.exit(2)


def build_parser():
    p = one_line_parser(
        prog="forkserver", allow_abbrev=False,   # --max-requests is not --max-requests-per-...
        description="A WSGI server that forks one child process per connection.",
        epilog="Exit statuses: 0 stopped cleanly, 1 internal error, 2 bad usage or "
               "config, 3 the app could not be loaded, 4 could not listen. "
               "Signals: TERM graceful stop, INT/QUIT fast stop, HUP reload the app, "
               "USR1 reopen log files.")
    p.add_argument("app", metavar="MODULE:CALLABLE", nargs="?",
                   help="the WSGI app: module (its `application`), module:name, "
                        "module:factory() or module:factory('arg', key=1) with literal "
                        "arguments; or wsgi_app in the config file, or --paste")
    p.add_argument("-v", "--version", action="version", version="forkserver " + __version__)
    p.add_argument("-c", "--config", metavar="PATH",
                   help="a Python file of settings and hooks: forkserver's names (as the "
                        "options) or gunicorn's (gunicorn.conf.py)")
    p.add_argument("--check-config", action="store_true",
                   help="load the config and the app, say what is wrong, exit 0 or 2; "
                        "serve nothing")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings and exit")
    add_socket_options(p)
    add_app_options(p)
    add_speed_options(p)
    add_supervision_options(p)
    add_http_options(p)
    add_logging_options(p)
    add_lab_options(p)
    add_gunicorn_only_options(p)
    return p


def add_socket_options(p):
    g = p.add_argument_group("sockets")
    g.add_argument("-b", "--bind", action="append", type=bind_address, metavar="ADDRESS",
                   help="HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N; repeatable "
                        "(default %s; port 0 picks a free port)" % DEFAULT_BIND)
    g.add_argument("--backlog", type=positive_int, default=DEFAULT_BACKLOG,
                   help="listen backlog (default %(default)s)")
    g.add_argument("-m", "--umask", type=octal, default=0o022,
                   help="umask for unix socket files (default 022)")
    g.add_argument("-u", "--user", help="switch to this user after binding (when root)")
    g.add_argument("-g", "--group", help="switch to this group after binding (when root)")
    g.add_argument("--forwarded-allow-ips", default="127.0.0.1,::1", metavar="LIST",
                   help="peers trusted for X-Forwarded-* and Forwarded: addresses, "
                        "CIDRs or * (default %(default)s); unix socket peers are trusted")
    g.add_argument("--forwarded-headers", choices=tuple(FORWARDING_FAMILIES),
                   default=DEFAULT_FORWARDING_FAMILY,
                   help="the header family the proxy sets, the only one believed: "
                        "x-forwarded (X-Forwarded-For/-Proto, as nginx; default) or "
                        "forwarded (RFC 7239)")


def add_app_options(p):
    g = p.add_argument_group("the app")
    g.add_argument("--chdir", metavar="DIR", help="change to DIR before loading the app")
    g.add_argument("--pythonpath", metavar="DIRS",
                   help="comma-separated directories to put on sys.path")
    g.add_argument("-e", "--env", dest="raw_env", action="append", type=env_pair,
                   metavar="KEY=VALUE", help="set an environment variable for the app; "
                   "repeatable")
    g.add_argument("--paste", "--paster", metavar="INI[#NAME]",
                   help="instead of MODULE:CALLABLE, the app of a PasteDeploy file (a "
                   "Pyramid project's production.ini), as gunicorn's --paste: its "
                   "[app:NAME] section (main by default); its [loggers], if any, set up "
                   "the logging module first; needs PasteDeploy")
    g.add_argument("--paste-global", dest="raw_paste_global_conf", action="append",
                   type=env_pair, metavar="KEY=VALUE",
                   help="a global_conf value for the --paste file (%%(KEY)s in it); "
                   "repeatable")
    g.add_argument("--prewarm", metavar="PATH", type=prewarm_path,
                   help="warm up with GET PATH, not GET / (the default): the request runs "
                   "through the app before serving, first in a trial child, then in the "
                   "parent if it answered below 500 and left nothing open, so first-request "
                   "set-up is inherited by every child; a PATH that fails stops the start")
    g.add_argument("--no-prewarm", dest="prewarm", action="store_const", const=False,
                   help="no warm-up request: no app code runs before the first client's")
    g.add_argument("--reload", action="store_true",
                   help="development: reload when a source file of the app changes")


def add_speed_options(p):
    g = p.add_argument_group(
        "speed", "each trick of forkparts/accel.py, on the server's own objects only; "
        "docs/performance.md gives what each one is worth")
    g.add_argument("--no-huge-pages", dest="huge_pages", action="store_false",
                   help="keep the parent's heap in 4 KiB pages (by default its nearly "
                   "full 2 MiB ranges become huge pages at start, which fork() and each "
                   "child's exit handle in batches on Linux 6.9+)")
    g.add_argument("--no-allocator-fill", dest="allocator_fill", action="store_false",
                   help="leave the holes in the allocator's pools (by default they are "
                   "filled before forking, so children's new objects go to fresh pages)")
    g.add_argument("--fast-accept", dest="fast_accept", action="store_true", default=None,
                   help="accept with socket.py's C layer only, without its Python "
                   "__init__ (the default for now)")
    g.add_argument("--no-fast-accept", dest="fast_accept", action="store_false",
                   help="accept with the public socket.accept()")
    g.add_argument("--no-raw-signals", dest="raw_signals", action="store_false",
                   help="set signal handlers and masks through signal.py's wrappers (by "
                   "default the fork path and the child call the C functions of _signal)")


def add_supervision_options(p):
    g = p.add_argument_group("supervision")
    g.add_argument("--max-children", type=non_negative_int, default=DEFAULT_MAX_CHILDREN,
                   metavar="N", help="most live children; 0 = no cap (default %(default)s)")
    g.add_argument("-t", "--timeout", type=non_negative_seconds, default=DEFAULT_TIMEOUT_SECONDS,
                   metavar="SECONDS", help="kill a child serving longer than this; 0 = never "
                   "(default %(default)s)")
    g.add_argument("--graceful-timeout", type=non_negative_seconds,
                   default=DEFAULT_GRACEFUL_TIMEOUT_SECONDS, metavar="SECONDS",
                   help="on SIGTERM, how long in-flight children may finish (default %(default)s)")
    g.add_argument("--limit-memory", type=megabytes, default=0, metavar="MB",
                   help="memory a child may add to what it shares with the parent")
    g.add_argument("--limit-cpu", type=non_negative_int, default=0, metavar="SECONDS",
                   help="CPU seconds a child may use")
    g.add_argument("--max-children-per-ip", type=non_negative_int, default=0, metavar="N",
                   help="most live children plus connections held by the accept "
                        "filter per client address; 0 = off (default)")
    g.add_argument("--max-fork-rate", type=per_second, default=0, metavar="PER_SECOND",
                   help="most forks per second; 0 = off (default)")
    g.add_argument("--pidfile", "--pid", "-p", metavar="PATH",
                   help="write the parent's pid here")
    g.add_argument("--status-file", metavar="PATH",
                   help="write the parent's live/high-water child counts here as JSON, "
                        "at most once a second (for scripts/watch_children.py)")
    g.add_argument("--subreaper", action="store_true",
                   help="adopt and reap orphaned grandchildren, as PID 1 would (Linux)")


def add_http_options(p):
    g = p.add_argument_group("HTTP")
    g.add_argument("--keep-alive", type=non_negative_seconds, default=0.0, metavar="SECONDS",
                   help="serve more requests per connection until idle this long; "
                        "0 = one request per connection (default)")
    g.add_argument("--max-requests-per-connection", type=positive_int, default=100, metavar="N",
                   help="with --keep-alive, close after this many requests (default %(default)s)")
    g.add_argument("--header-timeout", type=positive_seconds,
                   default=HEADER_TIMEOUT_SECONDS, metavar="SECONDS",
                   help="the whole request head must arrive within this (default %(default)s)")
    g.add_argument("--read-timeout", type=positive_seconds,
                   default=READ_TIMEOUT_SECONDS, metavar="SECONDS",
                   help="a stalled body read gets 408 (default %(default)s)")
    g.add_argument("--min-body-rate", type=per_second, default=MIN_BODY_RATE,
                   metavar="BYTES_PER_SECOND", help="after a grace of --header-timeout, "
                   "a slower request body gets 408 (default %(default)s, as Apache's MinRate)")
    g.add_argument("--max-body", type=byte_count, default=MAX_BODY_BYTES,
                   metavar="BYTES", help="largest request body (default 1 GiB)")
    add_limit_options(g)
    g.add_argument("--no-accept-filter", dest="accept_filter", action="store_false",
                   help="fork as soon as a connection is accepted instead of "
                        "when its head is complete")
    g.add_argument("--max-pending", type=positive_int, default=None, metavar="N",
                   help="connections the accept filter may hold (default %d, less if "
                        "RLIMIT_NOFILE leaves no room for them)" % DEFAULT_MAX_PENDING)


def add_limit_options(g):
    """The request head's limits (gunicorn's --limit-request-* among them)."""
    g.add_argument("--limit-request-line", type=limit_or_unlimited,
                   default=MAX_REQUEST_LINE_BYTES, metavar="BYTES",
                   help="longest request line; longer is 414; 0 = only the head limit, as "
                        "gunicorn's unlimited (default %(default)s)")
    g.add_argument("--limit-request-fields", type=limit_or_unlimited,
                   default=MAX_HEADER_FIELDS, metavar="N",
                   help="most header fields; more is 431; 0 = only the head limit "
                        "(default %(default)s)")
    g.add_argument("--limit-request-field-size", "--limit-request-field_size",
                   type=limit_or_unlimited,
                   default=MAX_FIELD_BYTES, metavar="BYTES",
                   help="longest header field line; longer is 431; 0 = only the head "
                        "limit (default %(default)s)")
    g.add_argument("--limit-request-head", type=positive_int,
                   default=MAX_HEAD_BYTES, metavar="BYTES",
                   help="largest request head; larger is 431 (default %(default)s)")
    g.add_argument("--limit-chunk-line", type=positive_int,
                   default=MAX_CHUNK_LINE_BYTES, metavar="BYTES",
                   help="a chunk-size line with its extensions (default %(default)s); "
                        "longer is 400")


def add_logging_options(p):
    g = p.add_argument_group("logging")
    # Both on one command line contradict each other; --no-access-log over a
    # config file's accesslog is the command line winning, as ever.  The
    # default "-" is --no-access-log's: argparse counts an option for the
    # group only when its value is not its own default object, and a "-"
    # from the command line is the very object "-" (one-character strings
    # are shared), so with it --access-log - --no-access-log would pass.
    access = g.add_mutually_exclusive_group()
    access.add_argument("--access-log", "--access-logfile", default=argparse_suppress(),
                        metavar="PATH", help="access log file, - for stdout (default)")
    access.add_argument("--no-access-log", dest="access_log", action="store_const", const=None,
                        default="-", help="no access log (overrides a config file's accesslog)")
    g.add_argument("--access-log-format", "--access-logformat", default=COMMON_LOG_FORMAT,
                   metavar="FORMAT", help="gunicorn-style atoms (default: Common Log Format)")
    g.add_argument("--error-log", "--error-logfile", "--log-file", default="-", metavar="PATH",
                   help="error log file, - for stderr (default)")
    g.add_argument("--log-level", default="info", type=log_level, metavar="LEVEL",
                   help="%s, in any case (default %%(default)s)" % ", ".join(
                       sorted(LEVELS, key=LEVELS.get)))
    g.add_argument("--capture-output", action="store_true",
                   help="the app's stdout and stderr go to --error-log (when it is a file)")
    g.add_argument("--proc-name", "-n", "--name", metavar="NAME", default="forkserver",
                   help="process title prefix (default %(default)s; needs setproctitle)")
    g.add_argument("--title-with-query", action="store_true",
                   help="show the query string in children's process titles (hidden by "
                        "default: tokens travel there, and ps shows titles to every user)")
    g.add_argument("--trace", nargs="?", type=trace_modes, const=TRACE_MODES, default=(),
                   metavar="MODES",
                   help="one stamped line per event on stderr, '<monotonic time> [<pid>] "
                        "text': process (fork, SIGCHLD, exit, reap), http (request and "
                        "response heads; access log lines then carry the same '<time> "
                        "[<pid>]' prefix); a comma list, or all. A bare --trace is all; "
                        "to choose, write --trace=MODES")


def add_lab_options(p):
    g = p.add_argument_group(
        "lab switches",
        "For learning only: each reproduces a classic mistake of fork servers on "
        "purpose (docs/labs.md).  Never use them in production.")
    g.add_argument("--lab-iterative", action="store_true",
                   help="MISTAKE (lab 0): no fork; the parent serves each connection itself, "
                        "one at a time (the tutorial's first server). --timeout raises in the "
                        "app (500); not with --keep-alive or a lab switch that needs a child "
                        "(--no-gc-freeze is allowed: it changes nothing here); an app that "
                        "calls os._exit ends the server")
    g.add_argument("--reaper", choices=("loop", "once", "none"), default="loop",
                   help="loop: correct waitpid loop (default); once: one waitpid per "
                        "SIGCHLD (lost signals leave zombies); none: no reaper")
    g.add_argument("--lab-parent-keeps-client", action="store_true",
                   help="MISTAKE: the parent never closes its copy of the client socket")
    g.add_argument("--lab-child-keeps-listener", action="store_true",
                   help="MISTAKE: the child keeps its copy of the listening socket")
    g.add_argument("--lab-print-in-handler", action="store_true",
                   help="MISTAKE: reap and print() inside the SIGCHLD handler")
    g.add_argument("--no-gc-freeze", action="store_true",
                   help="MISTAKE: skip gc.freeze() before forking (copy-on-write lab)")
    g.add_argument("--lab-orphans", action="store_true",
                   help="MISTAKE: children outlive a SIGKILLed parent (no "
                        "PR_SET_PDEATHSIG), as the tutorial's do (lab 12)")


# gunicorn's pool settings, which have no meaning for one process per
# connection: accepted (a gunicorn command line or config file works) with
# one warning each saying why.  Also read by forkparts/configfile.py.
POOL_ONLY = {
    "workers": "forkserver forks one child per connection instead of a pool of "
               "workers; --max-children caps how many run at once",
    "threads": "each child serves its one connection in one thread; concurrency is "
               "--max-children",
    "worker_class": "forkserver has one kind of worker, a child forked per connection "
                    "(like gunicorn's sync worker); concurrency is --max-children",
    "worker_connections": "only gunicorn's async workers use it; concurrency here is "
                          "--max-children",
    "preload_app": "the app is always imported once in the parent before forking, which "
                   "is what --preload does",
    "max_requests": "every child exits after its connection, so none lives long enough "
                    "to need recycling (with --keep-alive, --max-requests-per-connection "
                    "ends a connection, and its child, after N requests: default 100)",
    "max_requests_jitter": "every child exits after its connection, so none lives long "
                           "enough to need recycling (with --keep-alive, see "
                           "--max-requests-per-connection)",
    "keepalive": "gunicorn's sync worker ignores it too; here every idle kept-alive "
                 "connection would hold a child: --keep-alive SECONDS is the explicit switch",
}


def add_gunicorn_only_options(p):
    g = p.add_argument_group(
        "gunicorn's pool options", "accepted so a gunicorn command line works; each "
        "is ignored with a warning pointing at --max-children")
    g.add_argument("-w", "--workers", type=non_negative_int, metavar="N")
    g.add_argument("--threads", type=non_negative_int, metavar="N")
    g.add_argument("-k", "--worker-class", metavar="CLASS")
    g.add_argument("--worker-connections", type=non_negative_int, metavar="N")
    g.add_argument("--max-requests", type=non_negative_int, metavar="N")
    g.add_argument("--max-requests-jitter", type=non_negative_int, metavar="N")
    g.add_argument("--preload", dest="preload_app", action="store_true", default=None)
    for setting, (flags, nargs) in FLAGS.items():
        refused, line = flag_verdict(setting)
        g.add_argument(*flags, nargs=nargs, action=refuse(line) if refused else ignore(line),
                       dest="ignored_flags", help=argparse_suppress(),
                       default=argparse_suppress())


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def refuse(line):
    """An argparse action: the flag is a usage error, ``line`` (its %s the
    flag as typed) saying why."""
    import argparse

    class Refuse(argparse.Action):
        not_a_setting = True   # the config file refuses the setting on its own terms

        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(line % option_string)
    return Refuse


def ignore(line):
    """An argparse action: the flag (and its value) is taken, and ``line``
    (its %s the flag as typed) is a warning at start (opts.ignored_flags),
    as the config file's is for the setting."""
    import argparse

    class Ignore(argparse.Action):
        not_a_setting = True

        def __call__(self, parser, namespace, values, option_string=None):
            lines = list(getattr(namespace, self.dest, None) or [])
            if line % option_string not in lines:
                lines.append(line % option_string)
            setattr(namespace, self.dest, lines)
    return Ignore


def pool_only_warnings(opts):
    """One line for each gunicorn pool option given (command line or config)."""
    cap = "--max-children (now %s)" % (getattr(opts, "max_children", None) or "no cap")
    return ["%s ignored: %s" % (name, why.replace("--max-children", cap, 1))
            for name, why in POOL_ONLY.items() if getattr(opts, name, None) not in (None, False)]


def env_pair(text):
    """-e/--env KEY=VALUE, as gunicorn's raw_env."""
    key, sep, _ = str(text).partition("=")
    if not sep or not key:
        raise argparseerror("%r is not KEY=VALUE" % (text,))
    return str(text)


def trace_modes(text):
    """--trace=process,http: the modes, a sorted tuple ("all": every one)."""
    modes = set()
    for mode in str(text).lower().split(","):
        mode = mode.strip(" ")
        if mode == "all":
            modes.update(TRACE_MODES)
        elif mode in TRACE_MODES:
            modes.add(mode)
        else:
            raise argparseerror("unknown mode %r: choose from %s, all (comma-separated)"
                                % (mode, ", ".join(TRACE_MODES)))
    return tuple(sorted(modes))


def bare_trace(argv):
    """A bare --trace means every mode and never takes the next argument as
    its value (``--trace tests.apps:hello`` keeps the app spec): argparse's
    optional value would, so it is spelt --trace=all before parsing."""
    args = list(argv)
    end = args.index("--") if "--" in args else len(args)
    return ["--trace=all" if arg == "--trace" else arg for arg in args[:end]] + args[end:]


ASCII_DIGITS_RE = re.compile(r"[0-9]{1,10}")   # str.isdigit() takes "²" and "٣"


def parse_bind(address):
    """Split a --bind address into (kind, value): ("unix", path), ("fd", n),
    ("inet", (host, port)); a UsageError names what is wrong with it."""
    if address.startswith("unix:"):
        if not address[5:]:
            raise UsageError("%r: empty unix socket path" % address)
        return "unix", address[5:]
    if address.startswith("fd://"):
        if not ASCII_DIGITS_RE.fullmatch(address[5:]):
            raise UsageError("%r: fd:// needs a file descriptor number" % address)
        return "fd", int(address[5:])
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
        if not sep:
            raise UsageError("%r: expected [IPv6]:PORT" % address)
    else:
        host, sep, port = address.rpartition(":")
        if not sep or ":" in host:
            raise UsageError("%r: expected HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"
                             % address)
    if not ASCII_DIGITS_RE.fullmatch(port) or int(port) > 65535:
        raise UsageError("%r: port must be a number from 0 to 65535" % address)
    return "inet", (host or "0.0.0.0", int(port))


def bind_address(text):
    """--bind (and a config file's bind): the address, its syntax checked
    when the options are read, so a start and --check-config refuse alike."""
    try:
        parse_bind(str(text))
    except UsageError as exc:
        raise argparseerror(str(exc)) from None
    return str(text)


bind_address.__name__ = "HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N"


def check_binds(addresses):
    """Two --bind addresses naming one socket are a usage error, before
    anything is bound (the second bind would fail as if another server held
    the port).  Port 0 twice is two free ports, not one address."""
    seen = {}
    for address in addresses:
        kind, value = parse_bind(address)
        if kind == "unix":
            value = os.path.normpath(value)
        if kind == "inet" and value[1] == 0:
            continue
        first = seen.get((kind, value))
        if first == address:
            raise UsageError("--bind %r is given twice: give each address once" % address)
        if first is not None:
            raise UsageError("--bind %r and --bind %r name the same socket: give each "
                             "address once" % (first, address))
        seen[kind, value] = address


# RFC 9112 3.2.1:  origin-form = absolute-path [ "?" query ]; absolute-path
# starts with "/", and a request target is visible ASCII with no fragment
# ("#", RFC 9112 3.2), as the parser's one-pass lane takes it.
ORIGIN_FORM_RE = re.compile(r"/[\x21\x22\x24-\x7e]*")


def prewarm_path(text):
    """--prewarm PATH: an origin-form target, which the server's own parser
    passes to the app (any other is answered 400 before the app is called)."""
    if not ORIGIN_FORM_RE.fullmatch(str(text)):
        raise argparseerror("%r is not a path starting with / (an origin-form request "
                            "target, RFC 9112 3.2.1: visible ASCII, no #), e.g. /healthz"
                            % (text,))
    return str(text)


prewarm_path.__name__ = "path starting with /"


def log_level(text):
    """--log-level in any case (gunicorn takes DEBUG and debug alike)."""
    name = str(text).lower()
    if name not in LEVELS:
        raise argparseerror("%r is not one of %s" % (
            text, ", ".join(sorted(LEVELS, key=LEVELS.get))))
    return name


# What the number options accept, so that no value that starts the server can
# fail every request later (a C timeval, an rlimit, listen()'s int overflowing).
MAX_OPTION_COUNT = 2 ** 31 - 1            # a C int: listen()'s backlog, counts
MAX_OPTION_BYTES = 1 << 50                # --max-body: 1 PiB
MAX_OPTION_SECONDS = 365 * 24 * 3600.0    # timeouts: a year
MAX_OPTION_MB = float(1 << 30)            # --limit-memory: 1 PiB
MAX_OPTION_RATE = 1e6                     # --max-fork-rate, per second


def _number(kind, low, high, what, low_open=False):
    """An argparse type: a finite `kind` from low (or above it) to high,
    written in ASCII digits; anything else is an error naming the value."""
    def convert(text):
        try:
            value = kind(text) if str(text).isascii() else None
        except (ValueError, OverflowError):
            value = None
        if (value is None or value != value or value < low or value > high
                or (low_open and value == low)):
            raise argparseerror("%r is not a %s" % (text, what))
        return value
    convert.__name__ = what
    return convert


def argparseerror(message):
    import argparse
    return argparse.ArgumentTypeError(message)


positive_int = _number(int, 1, MAX_OPTION_COUNT, "whole number from 1 to %d" % MAX_OPTION_COUNT)
non_negative_int = _number(int, 0, MAX_OPTION_COUNT,
                           "whole number from 0 to %d" % MAX_OPTION_COUNT)
byte_count = _number(int, 0, MAX_OPTION_BYTES, "number of bytes from 0 to %d" % MAX_OPTION_BYTES)
positive_seconds = _number(float, 0.0, MAX_OPTION_SECONDS, "number of seconds above 0 and "
                           "at most %d" % MAX_OPTION_SECONDS, low_open=True)
non_negative_seconds = _number(float, 0.0, MAX_OPTION_SECONDS,
                               "number of seconds from 0 to %d" % MAX_OPTION_SECONDS)
megabytes = _number(float, 0.0, MAX_OPTION_MB, "number of MB from 0 to %d" % MAX_OPTION_MB)
per_second = _number(float, 0.0, MAX_OPTION_RATE, "rate from 0 to %d per second" % MAX_OPTION_RATE)
_count_or_zero = _number(int, 0, MAX_OPTION_COUNT,
                        "whole number from 0 to %d" % MAX_OPTION_COUNT)


def limit_or_unlimited(text):
    """--limit-request-*: gunicorn's 0 means unlimited; here the request head's
    own limit (--limit-request-head) is then the only bound."""
    return _count_or_zero(text) or MAX_OPTION_COUNT


limit_or_unlimited.__name__ = "whole number from 0 to %d" % MAX_OPTION_COUNT
octal = _number(lambda t: int(t, 8), 0, 0o777, "umask in octal, from 000 to 777")
