"""The --config file: a Python file of settings and hooks, gunicorn's way.

DESIGN note: a config file sets the same names as the options' dests, and
each value is checked by its option's converter (forkparts/cli.py), so the
file and the command line can never disagree on what a value means; the
command line wins (parse_options).  A room of its own because it runs the
user's Python and reports the user's mistakes (unknown names, gunicorn's
names, hooks that are not functions) in the user's words.
"""

import os

from forkparts.apps import user_traceback
from forkparts.cli import UsageError, build_parser, octal
# Checked at start, so a bad value is a usage error, not a failure per request.
from forkparts.logs import check_access_format
from forkparts.proxy import ProxyTrust

HOOKS = ("on_starting", "when_ready", "pre_fork", "post_fork", "child_exit", "on_exit")

NOT_SETTINGS = ("help", "version", "config", "app")   # dests a config file cannot set


def read_config_file(path, parser):
    """Settings (same names as the options' dests) and hooks from a Python file.

    Returns (settings, hooks, warnings); a setting's value is checked as its
    option's would be, so a bad value is a usage error naming the setting.
    """
    namespace = {"__file__": os.path.abspath(path), "__name__": "forkserver_config"}
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec"), namespace)
    except OSError as exc:
        raise UsageError("cannot read config file %r: %s" % (path, exc.strerror)) from None
    except BaseException:
        raise UsageError(user_traceback("config file %r failed" % path)) from None
    # reversed: where two options share a dest (--access-log, --no-access-log)
    # the first, value-taking one describes the setting.
    actions = {a.dest: a for a in reversed(parser._actions) if a.dest not in NOT_SETTINGS}
    switches = switch_settings(parser)
    settings, hooks, warnings = {}, {}, []
    for name, value in namespace.items():
        if name in HOOKS:
            if not callable(value):
                raise UsageError("config file %r: hook %s must be a function" % (path, name))
            hooks[name] = value
        elif name in actions:
            settings[name] = config_value(path, actions[name], value)
        elif name in switches:
            if config_value(path, switches[name], value):   # True: as if given
                settings[switches[name].dest] = switches[name].const
        elif is_unknown_setting(name, value):
            known = list(actions) + list(switches) + list(HOOKS)
            warnings.append(unknown_setting_warning(path, name, known))
    return settings, hooks, warnings


def switch_settings(parser):
    """Switches whose long name is not their dest (--no-access-log sets
    access_log, --no-accept-filter accept_filter): each is a setting of its own
    name too, so every option has a setting named like it (no_access_log = True)."""
    found = {}
    for action in parser._actions:
        for option in action.option_strings:
            name = option[2:].replace("-", "_")
            if (option.startswith("--") and action.nargs == 0 and name != action.dest
                    and action.dest not in NOT_SETTINGS):
                found[name] = action
    return found


def config_value(path, action, value):
    """Check a config file value with its option's converter (CLI strings and
    Python values alike: ``timeout = 5``, ``umask = 0o007``, ``bind = [...]``)."""
    import argparse
    if action.dest == "bind":
        binds = [value] if isinstance(value, str) else value
        if not isinstance(binds, (list, tuple)) or not all(isinstance(b, str) for b in binds):
            raise UsageError("config file %r: bind must be a string or a list of strings" % path)
        return list(binds)
    if isinstance(value, (list, tuple)) and action.dest in COMMA_LIST_SETTINGS:
        value = ",".join(map(str, value))   # forwarded_allow_ips = ["10.0.0.5", "::1"]
    try:
        return convert_setting(action, value)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UsageError("config file %r: setting %s: %s" % (path, action.dest, exc)) from None


COMMA_LIST_SETTINGS = ("forwarded_allow_ips", "pythonpath")


def convert_setting(action, value):
    import argparse
    if action.choices is not None and value not in action.choices:
        raise argparse.ArgumentTypeError("%r is not one of %s" % (
            value, ", ".join(map(str, action.choices))))
    if value is None and (action.default is None or action.dest == "access_log"):
        return None                        # unset, or access_log = None: no access log
    if action.nargs == 0:                  # a switch: --reload, --no-accept-filter
        if isinstance(value, bool):
            return value
        raise argparse.ArgumentTypeError("%r is not True or False" % (value,))
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise argparse.ArgumentTypeError("%r is not a %s" % (
            value, "string" if action.type is None else action.type.__name__))
    if action.type is None:
        return str(value)
    text = format(value, "o") if action.type is octal and isinstance(value, int) else str(value)
    return action.type(text)


def is_unknown_setting(name, value):
    """A name the user meant as a setting: not private, not a CONSTANT, not an
    import or a helper function."""
    import types
    if name.startswith("_") or name.isupper() or isinstance(value, types.ModuleType):
        return False
    return not callable(value) or name.startswith(("on_", "pre_", "post_", "when_", "child_"))


# gunicorn.conf.py names people bring along, and what plays their part here.
GUNICORN_SETTINGS = {"workers": "max_children", "loglevel": "log_level",
                     "accesslog": "access_log", "errorlog": "error_log",
                     "keepalive": "keep_alive"}


def unknown_setting_warning(path, name, known):
    import difflib
    close = ([GUNICORN_SETTINGS[name]] if name in GUNICORN_SETTINGS
             else difflib.get_close_matches(name, known, n=1))
    hint = " (did you mean %s?)" % close[0] if close else ""
    return "config file %r: unknown setting %r ignored%s" % (path, name, hint)




def parse_options(argv):
    parser = build_parser()
    opts = parser.parse_args(argv)
    hooks, warnings = {}, []
    if opts.config:
        try:
            settings, hooks, warnings = read_config_file(opts.config, parser)
        except UsageError as exc:
            parser.error(str(exc))
        # Set as defaults, so the command line wins.  --bind appends to its
        # default, so it is applied after parsing, only if the CLI gave none.
        config_binds = settings.pop("bind", None)
        parser.set_defaults(**settings)
        opts = parser.parse_args(argv)
        if opts.bind is None:
            opts.bind = config_binds
    try:
        ProxyTrust(opts.forwarded_allow_ips, opts.forwarded_headers)
        check_access_format(opts.access_log_format)
    except ValueError as exc:
        parser.error(str(exc))
    if opts.read_timeout and opts.timeout and opts.read_timeout >= opts.timeout:
        opts.read_timeout = max(opts.timeout * 0.75, 0.1)
    opts.config_warnings = warnings
    return opts, hooks
