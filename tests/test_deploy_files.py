"""deploy/ and the config file agree with the CLI (issue 8): every command-line
option has a config-file setting of the same name that does what the option
does; the systemd unit's ExecStart uses real flags; the example config works
under the socket activation the example units set up.  The units say what
docs/deploy.md says and pass systemd-analyze verify (issue 16)."""
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess

import pytest

from forkparts import cli, configfile
from forkparts.cli import build_parser
from forkparts.configfile import parse_options, read_config_file
from tests.conftest import needs
from tests.test_deploy import (GUIDE, GUIDE_APP_DIR, GUIDE_RUN_DIR, HTTP_TIMEOUT_SECONDS,
                               SOCKET_UNIT, STEP_2, STOP_SECONDS, Activated, guide_command,
                               unit_settings)

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")
EXAMPLE_CONFIG = os.path.join(DEPLOY, "forkserver.conf.py")
SERVICE_UNIT = os.path.join(DEPLOY, "forkserver.service")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
APP = "tests.apps:hello"

# A valid value for options whose string is checked while parsing; any other
# option takes "7" (numbers), its last choice, or a made-up path or name.
SPECIAL_VALUES = {"bind": "127.0.0.1:0", "forwarded_allow_ips": "10.0.0.0/8",
                  "umask": "027", "read_timeout": "7", "raw_env": "A=1",
                  "log_level": "DEBUG", "trace": "process",
                  "raw_paste_global_conf": "region=eu"}
NUMBER_TYPES = (cli.positive_int, cli.non_negative_int, cli.byte_count,
                cli.positive_seconds, cli.non_negative_seconds,
                cli.megabytes, cli.per_second, cli.limit_or_unlimited)
# Options whose setting has gunicorn's name rather than the option's.
GUNICORN_SETTING_NAMES = {"--env": "raw_env", "--paste-global": "raw_paste_global_conf"}


def long_options():
    """(option string, action) for every option a config file may set, by its
    first long name (the others are gunicorn's spellings: --pid, --access-logfile);
    gunicorn's flags that are refused (--certfile) are no settings."""
    parser = build_parser()
    return [(option, action) for action in parser._actions
            for option in [o for o in action.option_strings if o.startswith("--")][:1]
            if action.dest not in configfile.NOT_SETTINGS
            and not getattr(action, "refused", False)]


def sample_value(action):
    if action.dest in SPECIAL_VALUES:
        return SPECIAL_VALUES[action.dest]
    if action.choices:
        return list(action.choices)[-1]
    if action.type in NUMBER_TYPES:
        return "7"
    return "/tmp/sample-" + action.dest


def setting_name(option):
    return GUNICORN_SETTING_NAMES.get(option, option[2:].replace("-", "_"))


@pytest.mark.parametrize("option,action", long_options(), ids=[o for o, _ in long_options()])
def test_every_option_has_a_config_setting_of_the_same_name(option, action, tmp_path):
    """The setting named like the option gives the value the option gives."""
    ini = tmp_path / "app.ini"   # --paste takes an existing file
    ini.write_text("[app:main]\n")
    if action.nargs == 0:
        cli, line = [option], "%s = True" % setting_name(option)
    else:
        value = str(ini) if action.dest == "paste" else sample_value(action)
        # An optional value (--trace[=MODES]) is given in the = form.
        cli = [option + "=" + value] if action.nargs == "?" else [option, value]
        line = "%s = %r" % (setting_name(option), value)
    path = tmp_path / "forkserver.conf.py"
    path.write_text(line + "\n")
    # The app by --paste instead, for --paste and --paste-global (which needs it).
    app = {"paste": [], "raw_paste_global_conf": ["--paste", str(ini)]}.get(action.dest, [APP])
    default_app = ["--paste", str(ini)] if action.dest == "raw_paste_global_conf" else [APP]
    from_cli, _ = parse_options(app + cli)
    from_file, _ = parse_options(app + ["--config", str(path)])
    default, _ = parse_options(default_app)
    # gunicorn's pool options (--workers) warn, from the file as from the command line.
    expected = from_cli.config_warnings if action.dest in configfile.POOL_ONLY else []
    assert from_file.config_warnings == expected
    assert getattr(from_file, action.dest) == getattr(from_cli, action.dest)
    assert getattr(from_cli, action.dest) != getattr(default, action.dest), \
        "the sample value must differ from the default, or this test proves nothing"


def test_switch_setting_set_to_false_keeps_the_default(tmp_path):
    path = tmp_path / "forkserver.conf.py"
    path.write_text("no_access_log = False\nno_accept_filter = False\n")
    opts, _ = parse_options([APP, "--config", str(path)])
    assert opts.access_log == "-" and opts.accept_filter is True


def unit_exec_start(path):
    with open(path) as f:
        line = next(l for l in f if l.startswith("ExecStart="))
    return shlex.split(line[len("ExecStart="):])


def test_service_unit_exec_start_uses_real_options_and_the_example_config():
    argv = unit_exec_start(SERVICE_UNIT)
    flags = [a.split("=")[0] for a in argv if a.startswith("-")]
    known = {o for a in build_parser()._actions for o in a.option_strings}
    assert flags and set(flags) <= known, set(flags) - known
    # The unit points at the example config's installed name.
    config = argv[argv.index("--config") + 1]
    assert os.path.basename(config) == os.path.basename(EXAMPLE_CONFIG)


def test_example_config_binds_nothing_so_socket_activation_works():
    """forkserver.service runs with the example config and the socket of
    forkserver.socket: a bind in the config would bind the unit's socket path
    a second time (exit 4, "in use by another server")."""
    settings, _, warnings = read_config_file(EXAMPLE_CONFIG, build_parser())
    assert "bind" not in settings and not_deprecations(warnings) == []


def not_deprecations(lines):
    """The example's hooks may still be in forkserver's old forms (deploy/ is
    updated on its own, issue 16): their deprecation warning is allowed."""
    return [line for line in lines if "forkserver's old form, deprecated" not in line]


def test_example_config_serves_under_socket_activation(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    server = Activated(tmp_path, listener, args=("--config", EXAMPLE_CONFIG))
    try:
        listener.close()
        pid, addresses = server.ready_line()
        assert addresses == ["http://127.0.0.1:%d" % port]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_SECONDS)
        conn.request("GET", "/")
        assert json.loads(conn.getresponse().read())["server"] == pid
        conn.close()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(STOP_SECONDS) == 0
    finally:
        server.close()
    with open(tmp_path / "error.log") as f:
        log = f.read()
    assert re.search(r"\] ready$", log, re.M) and "WARNING" not in log


# ------------------------------------------------ the units as docs/deploy.md says (issue 16)

def test_service_unit_lets_a_re_executed_parent_notify():
    """USR2 execs a new parent that sends MAINPID= and READY=1 before it is the
    main process: NotifyAccess=main would have systemd drop them."""
    service = unit_settings(SERVICE_UNIT)
    assert service["Type"] == ["notify"] and service["NotifyAccess"] == ["all"]


def test_the_socket_unit_makes_the_runtime_directory_and_the_service_never_removes_it():
    socket_unit, service = unit_settings(SOCKET_UNIT), unit_settings(SERVICE_UNIT)
    assert os.path.dirname(socket_unit["ListenStream"][0]) == GUIDE_RUN_DIR
    assert socket_unit["DirectoryMode"] == ["0755"]     # nginx may search it
    # RuntimeDirectory= on the service would remove the socket's file with it
    # at every stop of the service (unless preserved, and then the service
    # would own a directory the socket unit needs first).
    assert "RuntimeDirectory" not in service
    assert (socket_unit["SocketGroup"], socket_unit["SocketMode"]) == (["www-data"], ["0660"])


def test_app_data_is_writable_under_protect_system_strict():
    """A stock Django project writes db.sqlite3 (and its journal) beside
    manage.py; the guide moves it to data/, which the unit makes writable."""
    service = unit_settings(SERVICE_UNIT)
    assert service["ProtectSystem"] == ["strict"]
    data = service["WorkingDirectory"][0] + "/data"
    assert data in " ".join(service["ReadWritePaths"]).split()
    assert guide_command(STEP_2, "install -d") == (
        "install -d -o %s -g %s -m 0750 %s" % (service["User"][0], service["Group"][0], data))
    with open(GUIDE) as f:
        assert '"NAME": BASE_DIR / "data" / "db.sqlite3"' in f.read()


@needs(SYSTEMD_ANALYZE, "systemd-analyze (package systemd; .ci/run installs it)")
def test_shipped_units_pass_systemd_analyze_verify(tmp_path):
    """With the paths they name made (the app's venv under tmp_path instead of
    /srv/myapp), the units as shipped: no output at all, since verify exits 0
    even on an unknown directive (it only warns)."""
    app_dir = tmp_path / "srv-myapp"
    (app_dir / "venv" / "bin").mkdir(parents=True)
    (app_dir / "data").mkdir()
    program = app_dir / "venv" / "bin" / "forkserver"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    units = []
    for path in (SOCKET_UNIT, SERVICE_UNIT):
        with open(path) as f:
            text = f.read()
        (tmp_path / os.path.basename(path)).write_text(text.replace(GUIDE_APP_DIR, str(app_dir)))
        units.append(str(tmp_path / os.path.basename(path)))
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no"] + units, cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs(SYSTEMD_ANALYZE, "systemd-analyze (package systemd; .ci/run installs it)")
def test_systemd_analyze_verify_catches_a_misspelt_directive(tmp_path):
    """The check above can fail: a unit with a typo prints a warning."""
    unit = tmp_path / "typo.service"
    unit.write_text("[Service]\nType=notify\nNotifyAcces=all\nExecStart=/bin/true\n")
    result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)],
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert "NotifyAcces" in result.stdout + result.stderr
