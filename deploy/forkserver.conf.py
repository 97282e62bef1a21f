"""forkserver configuration: `forkserver myapp:app --config forkserver.conf.py`.

A Python file, read as gunicorn reads gunicorn.conf.py: it runs, then its
module-level names that are settings are taken.  Every command-line option
has a setting named like the option with dashes turned into underscores
(--max-children -> max_children); gunicorn's names work too (accesslog,
loglevel).  Each value is checked as the option's (a bad one, such as
`accesslog = 5`, stops the start with exit 2 naming it), and an option given
on the command line wins over the file.  Any other name is yours and left
alone without a word, as gunicorn leaves it: `foo = 1`, imports, helper
functions, UPPER_CASE constants, _private names.  Only a name within a typo
of a setting gets a warning naming it: `mychildren = 4` logs "unknown
setting 'mychildren' ignored (did you mean max_children?)".  A gunicorn
setting with no meaning for one process per connection (`workers`) gets a
warning saying why; one forkserver cannot honour (TLS, `daemon`) stops the
start.  docs/operations.md, "gunicorn's config file and hooks", lists them.

Server hooks are plain functions with gunicorn's signatures.  `server` is the
parent's Server object: `server.log.info("...")` writes to the error log,
`server.cfg` holds the settings (by gunicorn's names or forkserver's),
`len(server.children)` is the number of live children.  A hook that is not
callable, or whose parameters cannot take the arguments the server passes,
stops the start (exit 2, and `--check-config` says so).  A hook that raises
is logged with its name and never stops the server; only a raising
post_fork has an effect (that connection gets a 500 and its child exits
with status 5).  tests/test_hooks.py checks where and when each hook runs;
tests/parts/test_configfile.py loads this file and checks what this
docstring says of names that are not settings.
"""
import os

# ----------------------------------------------------------------- sockets
# Unset here, because deploy/forkserver.service runs with this file under
# socket activation (deploy/forkserver.socket): the inherited socket is used,
# and a bind naming the unit's socket path would be bound a second time and
# refused ("in use by another server").  Without systemd, bind yourself
# (several forms may be listed):
# bind = ["unix:/run/forkserver/forkserver.sock"]
# bind = ["0.0.0.0:8000"]            # behind an nginx on another machine
umask = 0o007                        # socket file mode 0660: owner and group (nginx)
backlog = 1024                       # connections queued while at max_children
# Whose X-Forwarded-For / X-Forwarded-Proto / Forwarded to believe.  Unix socket
# peers are always trusted.  Addresses, CIDRs or "*".
forwarded_allow_ips = "127.0.0.1,::1"
# user = "forkserver"                # started as root: bind, then switch
# group = "forkserver"

# ----------------------------------------------------------------- the app
# The warm-up is on (the default; this file leaves it on): before the first
# fork the parent runs GET / through the app, so first-request set-up is
# inherited by every child.  A framework may keep what it built then: after a
# SIGHUP (systemctl reload) a warmed Django keeps its old URL resolver and
# serves the old views.  Load new code with SIGUSR2 (a new parent) instead, or
# turn the warm-up off, so that a HUP serves edited views (docs/operations.md,
# "Reloading (SIGHUP)"):
# no_prewarm = True

# ------------------------------------------------------------- supervision
# One child per connection: max_children is the concurrency.  Each child costs
# its private memory (about 3 MB for a small app, see docs/deploy.md).
max_children = 64
timeout = 30                         # seconds a child may serve before SIGTERM
graceful_timeout = 30                # on SIGTERM, time in-flight requests get
# keep_alive = 0                     # one request per connection (nginx buffers)

# ----------------------------------------------------------------- logging
# SIGUSR1 reopens both files (logrotate's postrotate).
access_log = "/var/log/forkserver/access.log"
error_log = "/var/log/forkserver/error.log"
log_level = "info"
# Combined log format plus the response time in microseconds and the child pid.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %(p)s'


# ------------------------------------------------------------------ hooks

def on_starting(server):
    """Parent, once: the app is imported and the sockets are bound (and
    privileges dropped), before the first connection is accepted."""
    server.log.info("starting with max_children=%d" % server.cfg.max_children)


def when_ready(server):
    """Parent, once: right after the ready line and READY=1 to systemd."""
    server.log.info("ready")


def pre_fork(server, worker):
    """Parent, before every fork (gunicorn's signature; ``worker`` is the
    child to be, without a pid yet).  Keep it cheap: it runs once per
    connection."""


def post_fork(server, worker):
    """Child, right after the fork, before the request is read.  The place to
    drop what must not be shared between processes: database connections
    opened at import time (e.g. SQLAlchemy `engine.dispose(close=False)`),
    and random generators seeded in the parent (the stdlib's `random` already
    reseeds itself after fork; numpy's does not).  Raising answers 500."""


def child_exit(server, worker):
    """Parent, after the child ``worker.pid`` was reaped; ``worker.status``
    as from os.waitpid."""
    status = worker.status
    if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
        server.log.warning("child %d ended abnormally (wait status %d)" % (worker.pid, status))


def on_exit(server):
    """Parent, once, after every child is gone, just before exiting."""
    server.log.info("bye")
