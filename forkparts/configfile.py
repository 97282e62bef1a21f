"""The --config file: a Python file of settings and hooks, gunicorn's way.

DESIGN note: a config file is read as gunicorn reads gunicorn.conf.py (its
app/base.py): the file runs as Python, then its module-level names that are
settings are taken, and every other name (imports, helper variables and
functions, UPPER_CASE constants) is left alone, as gunicorn leaves names it
does not know.  Settings go by forkserver's names (the options' dests) or by
gunicorn's (GUNICORN_RENAMED, and the many that are spelt alike); each value
is checked by its option's converter (forkparts/cli.py), so the file and the
command line never disagree on what a value means (an option without one,
a path or a name, takes a Python string only, as gunicorn's
validate_string); the command line wins (parse_options).  A gunicorn
setting forkserver cannot honour stops the start with one line naming it
(NOT_HONOURED, secure_scheme_headers), so a config never starts and then
fails requests; one with no meaning for one process per connection gets a
warning saying why (cli.POOL_ONLY).  Hooks go through forkparts/hooks.py,
which refuses one the server could not call.  A room of its own because it runs the user's Python and
reports the user's mistakes in the user's words.
"""

import os

from forkparts.apps import user_traceback
from forkparts.cli import (DEFAULT_BIND, POOL_ONLY, UsageError, bare_trace, build_parser, octal,
                           pool_only_warnings, usage_exit)
from forkparts.children import STATM_PATH
from forkparts.gunicorn_only import ANY, NOT_HONOURED
from forkparts.hooks import HOOKS, REFUSED_HOOKS, make_hooks
from forkparts.labs import check_switches
# Checked at start, so a bad value is a usage error, not a failure per request.
from forkparts.logs import check_access_format
from forkparts.proxy import ProxyTrust

# dests a config file cannot set (ignored_flags: gunicorn's flags ignored, cli.py)
NOT_SETTINGS = ("help", "version", "config", "app", "ignored_flags")

# gunicorn's names for forkserver's settings, where they differ; the rest
# (bind, timeout, graceful_timeout, pidfile, user, group, umask, backlog,
# limit_request_*, forwarded_allow_ips, raw_env, chdir, pythonpath,
# proc_name, capture_output, reload, access_log_format, ...) are spelt alike.
GUNICORN_RENAMED = {"accesslog": "access_log", "errorlog": "error_log",
                    "loglevel": "log_level", "wsgi_app": "app"}

SECURE_SCHEME_DEFAULT = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https",
                         "X-FORWARDED-SSL": "on"}   # gunicorn's


def read_config_file(path, parser):
    """Settings (forkserver's or gunicorn's names) and hooks from a Python file.

    Returns (settings, hooks, warnings); a setting's value is checked as its
    option's would be, so a bad value is a usage error naming the setting,
    and every gunicorn setting or hook that cannot be honoured is one line
    of the UsageError raised.
    """
    namespace = run_config_file(path)
    # reversed: where two options share a dest (--access-log, --no-access-log)
    # the first, value-taking one describes the setting.
    reader = Reader(path, {a.dest: a for a in reversed(parser._actions)
                           if a.dest not in NOT_SETTINGS and not getattr(a, "not_a_setting", False)},
                    switch_settings(parser))
    for name, value in namespace.items():
        if not name.startswith("_"):   # __builtins__, __file__, the file's private names
            reader.read(name, value)
    hooks, deprecated = {}, []
    try:
        hooks, deprecated = make_hooks(reader.functions, "config file %r" % path)
    except ValueError as exc:    # hooks the server could not call, one line each
        reader.refused.extend(str(exc).splitlines())
    if reader.refused:
        raise UsageError("\n".join(reader.refused))
    return reader.settings, hooks, reader.warnings + deprecated


def run_config_file(path):
    """The file's module-level names after running it, as gunicorn's
    get_config_from_filename (a module named __config__)."""
    namespace = {"__file__": os.path.abspath(path), "__name__": "__config__"}
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec"), namespace)
    except OSError as exc:
        raise UsageError("cannot read config file %r: %s" % (path, exc.strerror)) from None
    except BaseException:
        raise UsageError(user_traceback("config file %r failed" % path)) from None
    return namespace


class Reader:
    """One config file's names sorted into settings, hooks, warnings and
    refusals (each a line naming the setting)."""

    def __init__(self, path, actions, switches):
        self.path, self.actions, self.switches = path, actions, switches
        self.settings, self.functions, self.warnings, self.refused = {}, {}, [], []

    def read(self, name, value):
        dest = GUNICORN_RENAMED.get(name, name)
        if name in HOOKS or name in REFUSED_HOOKS:
            self.read_hook(name, value)
        elif name == "wsgi_app":
            if not isinstance(value, str):
                raise UsageError("config file %r: wsgi_app must be a string" % self.path)
            self.settings["app"] = value
        elif dest in self.actions:
            action = self.actions[dest]
            # A string setting given None is unset, as gunicorn's validate_string
            # takes it (proc_name = None); access_log = None means no access log.
            if value is not None or dest == "access_log" or action.type is not None:
                self.settings[dest] = config_value(self.path, action, value, name)
        elif name in self.switches:
            if config_value(self.path, self.switches[name], value, name):   # True: as given
                self.settings[self.switches[name].dest] = self.switches[name].const
        elif name == "secure_scheme_headers":
            self.note(name, secure_scheme_problem(value))
        elif name == "keepalive":
            self.note(name, "ignored: " + POOL_ONLY[name])
        elif name in NOT_HONOURED:
            defaults, why = NOT_HONOURED[name]
            if not any(value is d or (d is not ANY and value == d) for d in defaults):
                self.note(name, why)
        elif is_unknown_setting(name, value):
            self.hint(name)

    def read_hook(self, name, value):
        """A hook's callability and signature are checked by make_hooks."""
        if name in REFUSED_HOOKS:
            self.note(name, "refused: " + REFUSED_HOOKS[name])
        else:
            self.functions[name] = value

    def note(self, name, problem):
        """A gunicorn setting left out: "refused: ..." stops the start."""
        if problem:
            line = "config file %r: gunicorn's %s %s" % (self.path, name, problem)
            (self.refused if problem.startswith("refused") else self.warnings).append(line)

    def hint(self, name):
        """A name no server knows is the file's own, as gunicorn takes it; only
        one close to a setting's name (a typo) gets a warning."""
        import difflib
        known = (list(self.actions) + list(self.switches) + list(HOOKS)
                 + list(GUNICORN_RENAMED) + list(NOT_HONOURED))
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        padded = "_%s_" % name   # use_loglevel (a Docker image's own) holds loglevel whole
        if close and "_%s_" % close[0] not in padded:
            self.warnings.append("config file %r: unknown setting %r ignored (did you "
                                 "mean %s?)" % (self.path, name, close[0]))


def secure_scheme_problem(value):
    """gunicorn's secure_scheme_headers ({header: value meaning https}) as
    forkserver's proxy trust can honour it: X-Forwarded-Proto: https, from
    --forwarded-allow-ips, is what it believes (or Forwarded's proto= with
    --forwarded-headers forwarded).  gunicorn's default is taken with a
    warning; any other header, or none, is refused."""
    if not isinstance(value, dict):
        return "refused: must be a dict of header: value"
    pairs = {(str(k).upper(), str(v).lower()) for k, v in value.items()}
    if pairs == {("X-FORWARDED-PROTO", "https")}:
        return None
    believed = "forkserver believes X-Forwarded-Proto: https only (from --forwarded-allow-ips)"
    if value == SECURE_SCHEME_DEFAULT:
        return "partly ignored: X-Forwarded-Protocol and X-Forwarded-Ssl are not read; " + believed
    return "refused: %s, or Forwarded's proto= with --forwarded-headers forwarded" % believed


def switch_settings(parser):
    """Switches whose long name is not their dest (--no-access-log sets
    access_log, --no-accept-filter accept_filter): each is a setting of its own
    name too, so every option has a setting named like it (no_access_log = True)."""
    found = {}
    for action in parser._actions:
        for option in action.option_strings:
            name = option[2:].replace("-", "_")
            if (option.startswith("--") and action.nargs == 0 and name != action.dest
                    and action.dest not in NOT_SETTINGS and not getattr(action, "not_a_setting", False)):
                found[name] = action
    return found


def config_value(path, action, value, name=None):
    """Check a config file value with its option's converter (CLI strings and
    Python values alike: ``timeout = 5``, ``umask = 0o007``, ``bind = [...]``);
    a problem names the setting as the file does (``name``)."""
    import argparse
    name = name or action.dest
    if isinstance(action, argparse._AppendAction):   # bind, raw_env: a string or a list
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(b, str) for b in items):
            raise UsageError("config file %r: %s must be a string or a list of strings"
                             % (path, name))
        try:
            return [action.type(item) if action.type else item for item in items]
        except argparse.ArgumentTypeError as exc:
            raise UsageError("config file %r: setting %s: %s" % (path, name, exc)) from None
    if (isinstance(value, (list, tuple)) and action.dest in COMMA_LIST_SETTINGS
            and all(isinstance(item, str) for item in value)):
        value = ",".join(value)   # forwarded_allow_ips = ["10.0.0.5", "::1"]
    try:
        return convert_setting(action, value)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UsageError("config file %r: setting %s: %s" % (path, name, exc)) from None


COMMA_LIST_SETTINGS = ("forwarded_allow_ips", "pythonpath")
# String settings that also take an int, as gunicorn's validate_user/_group.
NUMERIC_ID_SETTINGS = ("user", "group")


def convert_setting(action, value):
    import argparse
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError("%r is not one of %s" % (
            value, ", ".join(map(str, action.choices))))
    if value is None and (action.default is None or action.dest == "access_log"):
        return None                        # unset, or access_log = None: no access log
    if action.nargs == "?" and isinstance(value, bool):
        return action.const if value else action.default   # trace = True: a bare --trace
    if action.nargs == 0:                  # a switch: --reload, --no-accept-filter
        if isinstance(value, bool):
            return value
        raise argparse.ArgumentTypeError("%r is not True or False" % (value,))
    if action.type is None:                # a path, a name, a format: a string only,
        if action.dest in NUMERIC_ID_SETTINGS and type(value) is int:   # or a uid/gid
            return str(value)
        if not isinstance(value, str):     # as gunicorn's validate_string ("Not a string")
            raise argparse.ArgumentTypeError("%r is not a string" % (value,))
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise argparse.ArgumentTypeError("%r is not a %s" % (value, action.type.__name__))
    text = format(value, "o") if action.type is octal and isinstance(value, int) else str(value)
    return action.type(text)


def is_unknown_setting(name, value):
    """A name the user may have meant as a setting: not a CONSTANT, not an
    import or a helper function (a misspelt hook name is one)."""
    import types
    if name.isupper() or isinstance(value, types.ModuleType):
        return False
    return not callable(value) or name.startswith(("on_", "pre_", "post_", "when_", "child_",
                                                   "worker_"))


# gunicorn's: the config file read when no --config is given, if it exists in
# the current directory, and the variable whose options go between that
# file and the command line.
DEFAULT_CONFIG_FILE = "gunicorn.conf.py"
CMD_ARGS_VARIABLE = "GUNICORN_CMD_ARGS"


def config_path(given):
    """(the config file to read or None, notes for the log): the one given,
    else ./gunicorn.conf.py if the current directory has one, as gunicorn."""
    if given is None and os.path.isfile(DEFAULT_CONFIG_FILE):
        given = "./" + DEFAULT_CONFIG_FILE
        return given, ["config file %s read, as gunicorn reads it when no --config "
                       "is given (-c PATH names another)" % given]
    return given, []


class CommandArgs:
    """$GUNICORN_CMD_ARGS: options between the config file and the command
    line, parsed by a parser of their own, whose errors name the variable."""

    def __init__(self, environ, parser):
        import shlex
        self.argv = []
        self.parser = build_parser()
        self.parser.prog = "forkserver: %s" % CMD_ARGS_VARIABLE
        try:   # shlex: a value of only blanks is no options
            self.argv = bare_trace(shlex.split(environ.get(CMD_ARGS_VARIABLE, "")))
        except ValueError as exc:
            parser.error("%s: %s" % (CMD_ARGS_VARIABLE, exc))

    def config(self):
        return self.parser.parse_args(self.argv).config if self.argv else None

    def apply(self, parser, notes):
        """Make what the variable changes over the config file the defaults
        under the command line; its --bind (which replaces the file's)."""
        if not self.argv:
            return None
        base = vars(self.parser.parse_args([]))
        changed = {name: value for name, value in vars(self.parser.parse_args(self.argv)).items()
                   if value != base.get(name) and name != "config"}
        binds = changed.pop("bind", None)
        parser.set_defaults(**changed)
        notes.append("%s applied: %s" % (CMD_ARGS_VARIABLE, " ".join(self.argv)))
        return binds


def parse_options(argv, environ=None):
    """(opts, hooks): as gunicorn, the command line over $GUNICORN_CMD_ARGS
    over the config file (--config, else ./gunicorn.conf.py if there is
    one), checked whole.  A bad one ends the process with exit status 2
    and one line per problem."""
    import sys
    parser = build_parser()
    argv = bare_trace(sys.argv[1:] if argv is None else argv)
    cli = parser.parse_args(argv)   # the command line's own settings
    env = CommandArgs(os.environ if environ is None else environ, parser)
    config, notes = config_path(cli.config or env.config())
    hooks, warnings, config_binds = {}, [], None
    if config:
        try:
            settings, hooks, warnings = read_config_file(config, parser)
        except UsageError as exc:
            config_error(str(exc))
        # Set as defaults, so the command line wins.  --bind appends to its
        # default, so it is applied after parsing, only if the CLI gave none.
        config_binds = settings.pop("bind", None)
        parser.set_defaults(**settings)
        env.parser.set_defaults(**settings)
    config_binds = env.apply(parser, notes) or config_binds
    opts = parser.parse_args(argv)
    opts.config = config
    # Its absolute path (--chdir comes later) and its stamp, for a reload's look.
    opts.config_read = config and (os.path.abspath(config), file_stamp(config))
    if opts.bind is None:
        opts.bind = config_binds
    if opts.app and opts.paste and bool(cli.app) != bool(cli.paste):
        # One of them from the config file: the command line's wins, as gunicorn's --paste
        opts.app, opts.paste = cli.app, cli.paste
    check_options(opts, parser)
    opts.config_warnings = (warnings + pool_only_warnings(opts)
                            + getattr(opts, "ignored_flags", []) + port_warning(opts, environ))
    opts.config_notes = notes
    return opts, hooks


def file_stamp(path):
    """What tells a file's later change: (mtime_ns, size), or None."""
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return st and (st.st_mtime_ns, st.st_size)


def warn_config_changed(opts, log):
    """A HUP reloads the app, not the config file, whose settings (bind,
    user, hooks, timeouts) are the start's; gunicorn's HUP reads it again.
    A file changed since the start gets a warning, not silence."""
    if opts.config_read and file_stamp(opts.config_read[0]) != opts.config_read[1]:
        log.warning("the config file %s changed since the start, and a reload does not "
                    "read it again: its settings are the start's; SIGUSR2 starts a new "
                    "parent that reads it (docs/operations.md, Reloading)" % opts.config)


def port_warning(opts, environ):
    """gunicorn binds 0.0.0.0:$PORT when no bind is given (Heroku's habit);
    forkserver keeps its loopback default, and says so rather than nothing."""
    environ = os.environ if environ is None else environ
    port = environ.get("PORT")
    if opts.bind is not None or not port or environ.get("LISTEN_FDS"):
        return []
    return ["$PORT is %r, which forkserver does not read: it listens on %s unless told "
            "(gunicorn would bind 0.0.0.0:$PORT; here that is --bind 0.0.0.0:$PORT, or "
            "bind in the config file: docs/deploy.md, Containers)" % (port, DEFAULT_BIND)]


def check_options(opts, parser):
    """The checks of the options as a whole; a problem is parser.error (exit 2)."""
    check_app(opts, parser)
    problem = check_switches(opts)
    if problem:
        parser.error(problem)
    try:
        ProxyTrust(opts.forwarded_allow_ips, opts.forwarded_headers)
        check_access_format(opts.access_log_format)
    except ValueError as exc:
        parser.error(str(exc))
    if opts.limit_memory and not os.access(STATM_PATH, os.R_OK):   # every child would fail
        parser.error("--limit-memory: the child's address space is read from %s, which "
                     "this system does not have (Linux's /proc)" % STATM_PATH)
    if opts.read_timeout and opts.timeout and opts.read_timeout >= opts.timeout:
        opts.read_timeout = max(opts.timeout * 0.75, 0.1)


def check_app(opts, parser):
    """One app: MODULE:CALLABLE (or wsgi_app), or a --paste file, which is
    made absolute here, against the directory the server was started in,
    before --chdir, as gunicorn's --paste."""
    from forkparts.apps import logical_cwd
    if opts.paste:
        if opts.app:
            parser.error("give the app as MODULE:CALLABLE (or wsgi_app) or as --paste "
                         "INI, not both (%s and --paste %s)" % (opts.app, opts.paste))
        path, sep, name = opts.paste.partition("#")
        path = os.path.normpath(os.path.join(logical_cwd(), os.path.expanduser(path)))
        if not os.path.isfile(path):
            parser.error("--paste %s: no such file (%s)" % (opts.paste, path))
        if sep and not name:
            parser.error("--paste %s: no app section named after '#'" % opts.paste)
        opts.paste = path + sep + name
    elif opts.raw_paste_global_conf:
        parser.error("--paste-global is for a --paste file, and there is none")
    elif not opts.app:
        parser.error("the app is missing: give MODULE:CALLABLE, or wsgi_app in the "
                     "--config file, or --paste INI")


def config_error(message):
    """Exit 2 with the config file's problems, one "forkserver: error:" line
    each (a traceback stays whole under its first line)."""
    lines = message.splitlines()
    if not lines[0].startswith("config file") or "Traceback" in message:
        lines = [message]
    usage_exit("".join("forkserver: error: %s\n" % line for line in lines))


def effective_settings(opts, hooks):
    """--print-config: every setting as ``name = value``, then the hooks."""
    names = sorted(name for name in vars(opts)
                   if name not in ("config_warnings", "config_notes", "ignored_flags",
                                   "config_read"))
    lines = ["%s = %r" % (name, getattr(opts, name)) for name in names]
    if opts.bind is None and not os.environ.get("LISTEN_FDS"):   # else systemd's sockets
        lines[names.index("bind")] = "bind = [%r]  # the default" % DEFAULT_BIND
    lines.append("hooks = %r" % sorted(hooks))
    return "\n".join(lines) + "\n"
