"""gunicorn's settings that forkserver has no part for, and what each gets
here: one table for the command line and the config file alike.

DESIGN note.  A gunicorn user types a setting on the command line, in
$GUNICORN_CMD_ARGS or in gunicorn.conf.py, and moves it between them.  It
must mean the same in all three: "refused: WHY" stops the start (exit 2)
with one line naming the setting, "ignored: WHY" is one warning.  In a
config file a setting at gunicorn's default asks for nothing and is left
alone (NOT_HONOURED's defaults); a flag on the command line always asks.
A room of its own because forkparts/cli.py (the flags, FLAGS) and
forkparts/configfile.py (the names) both read it, and neither may import
the other's way round.  Written from gunicorn 27.0.1 (gunicorn/config.py);
tolerate_dangerous_framing is an earlier release's, kept for its configs.
"""

TLS_REFUSED = ("forkserver serves plain HTTP only, and must never serve it where TLS was "
               "configured: terminate TLS in the proxy in front (docs/deploy.md)")
TLS = "refused: " + TLS_REFUSED
OWN_LOGS = ("refused: forkserver writes its own log files only (--error-logfile, "
            "--access-logfile); the app configures its own logging (Django's LOGGING, "
            "logging.config in the app), and --paste sets it up from the ini's [loggers]")
STATSD = "refused: forkserver has no statsd client; --status-file has the counts"
SYSLOG = "refused: forkserver writes its own log files only; under systemd they reach the journal"
STRICT = "refused: forkserver's HTTP parser is strict and has no switch for it (docs/security.md)"
NO_SUCH = "refused: forkserver has no %s"
HTTP1 = "refused: forkserver speaks HTTP/1.x to WSGI apps only"
ANY = object()   # no value of it is gunicorn's default: any value is refused

# name -> (gunicorn's default values, what happens when one is changed).
NOT_HONOURED = {
    "certfile": ((None,), TLS), "keyfile": ((None,), TLS), "ca_certs": ((None,), TLS),
    "ciphers": ((None,), TLS), "ssl_version": ((ANY,), TLS), "cert_reqs": ((0,), TLS),
    "suppress_ragged_eofs": ((True,), TLS), "do_handshake_on_connect": ((False,), TLS),
    "daemon": ((False,), "refused: run forkserver under systemd or another supervisor "
                         "(docs/deploy.md)"),
    "reuse_port": ((False,), "refused: one parent owns the listening socket; a second "
                             "server would share its port unseen"),
    "initgroups": ((False,), "refused: --user drops every supplementary group"),
    "reload_extra_files": (([],), "refused: --reload watches the app's own modules only"),
    "root_path": (("",), "refused: the mount prefix is $SCRIPT_NAME, as gunicorn takes "
                         "it: raw_env = ['SCRIPT_NAME=/app'] or -e SCRIPT_NAME=/app"),
    "protocol": (("http",), "refused: forkserver speaks HTTP only"),
    "http_protocols": (("h1",), "refused: forkserver speaks HTTP/1.x only"),
    "http2_cleartext": (("off", False), "refused: forkserver speaks HTTP/1.x only"),
    "proxy_protocol": (("off", False, None),
                       "refused: the PROXY protocol is not read; use X-Forwarded-For"),
    "logger_class": (("gunicorn.glogging.Logger",), OWN_LOGS),
    "logconfig": ((None,), OWN_LOGS), "logconfig_dict": (({},), OWN_LOGS),
    "logconfig_json": ((None,), OWN_LOGS), "syslog": ((False,), SYSLOG),
    "syslog_addr": ((None, "udp://localhost:514", "unix:///var/run/syslog",
                     "unix:///var/run/log", "unix:///dev/log"), SYSLOG),
    "syslog_prefix": ((None,), SYSLOG), "syslog_facility": (("user",), SYSLOG),
    "statsd_host": ((None,), STATSD), "statsd_prefix": (("",), STATSD),
    "dogstatsd_tags": (("",), STATSD), "enable_backlog_metric": ((False,), STATSD),
    "strip_header_spaces": ((False,), STRICT), "permit_obsolete_folding": ((False,), STRICT),
    "permit_unconventional_http_method": ((False,), STRICT),
    "permit_unconventional_http_version": ((False,), STRICT),
    "casefold_http_method": ((False,), STRICT), "tolerate_dangerous_framing": ((False,), STRICT),
    "header_map": (("drop",), STRICT),
    "http_parser": (("auto",), "ignored: forkserver has one HTTP parser, its own"),
    "forwarder_headers": (("SCRIPT_NAME,PATH_INFO",),
                          "refused: no header sets SCRIPT_NAME or PATH_INFO here"),
    "dirty_apps": (([],), NO_SUCH % "dirty arbiter"),
    "dirty_workers": ((0,), NO_SUCH % "dirty arbiter"),
    "dirty_threads": ((1,), NO_SUCH % "dirty arbiter"),
    "dirty_timeout": ((300,), NO_SUCH % "dirty arbiter"),
    "dirty_graceful_timeout": ((30,), NO_SUCH % "dirty arbiter"),
    "asgi_loop": (("auto",), HTTP1), "asgi_lifespan": (("auto",), HTTP1),
    "asgi_disconnect_grace_period": ((3,), HTTP1),
    "websocket_max_message_size": ((16777216,), HTTP1),
    "http2_initial_window_size": ((65535,), HTTP1),
    "http2_max_concurrent_streams": ((100,), HTTP1),
    "http2_max_frame_size": ((16384,), HTTP1),
    "http2_max_header_list_size": ((65536,), HTTP1),
    "control_socket": ((ANY,), "ignored: forkserver has no control socket; its signals "
                               "and --status-file do that work (docs/operations.md)"),
    "control_socket_mode": ((0o600,), "ignored: forkserver has no control socket"),
    "control_socket_disable": ((False, True), "ignored: forkserver has no control socket"),
    "worker_tmp_dir": ((None,), "ignored: no heartbeat files, the parent keeps each "
                                "child's deadline itself"),
    "tmp_upload_dir": ((None,), "ignored: gunicorn does not use it either"),
    "sendfile": ((None, True), "ignored: wsgi.file_wrapper is always sent with sendfile"),
    "reload_engine": (("auto",), "ignored: --reload polls the modules' mtimes"),
    "spew": ((False,), "ignored: use --trace"),
    "enable_stdio_inheritance": ((False,), "ignored: the app's stdio is the server's"),
    "disable_redirect_access_to_syslog": ((False,), "ignored: there is no syslog"),
    "proxy_allow_ips": (("127.0.0.1,::1",), "ignored: the PROXY protocol is not read"),
    "uwsgi_allow_ips": (("127.0.0.1,::1",), "ignored: forkserver speaks HTTP only"),
}

# gunicorn's flags for the settings above: name -> (flags, argparse nargs:
# 0 for a switch, 1 for a value, "?" for an optional one).
FLAGS = {
    "certfile": (("--certfile",), 1), "keyfile": (("--keyfile",), 1),
    "ca_certs": (("--ca-certs",), 1), "ciphers": (("--ciphers",), 1),
    "ssl_version": (("--ssl-version",), 1), "cert_reqs": (("--cert-reqs",), 1),
    "suppress_ragged_eofs": (("--suppress-ragged-eofs",), 0),
    "do_handshake_on_connect": (("--do-handshake-on-connect",), 0),
    "daemon": (("-D", "--daemon"), 0), "reuse_port": (("--reuse-port",), 0),
    "initgroups": (("--initgroups",), 0),
    "reload_extra_files": (("--reload-extra-file",), 1), "root_path": (("--root-path",), 1),
    "protocol": (("--protocol",), 1), "http_protocols": (("--http-protocols",), 1),
    "http2_cleartext": (("--http2-cleartext",), 1),
    "proxy_protocol": (("--proxy-protocol",), "?"),
    "logger_class": (("--logger-class",), 1), "logconfig": (("--log-config",), 1),
    "logconfig_json": (("--log-config-json",), 1), "syslog": (("--log-syslog",), 0),
    "syslog_addr": (("--log-syslog-to",), 1), "syslog_prefix": (("--log-syslog-prefix",), 1),
    "syslog_facility": (("--log-syslog-facility",), 1),
    "statsd_host": (("--statsd-host",), 1), "statsd_prefix": (("--statsd-prefix",), 1),
    "dogstatsd_tags": (("--dogstatsd-tags",), 1),
    "enable_backlog_metric": (("--enable-backlog-metric",), 0),
    "strip_header_spaces": (("--strip-header-spaces",), 0),
    "permit_obsolete_folding": (("--permit-obsolete-folding",), 0),
    "permit_unconventional_http_method": (("--permit-unconventional-http-method",), 0),
    "permit_unconventional_http_version": (("--permit-unconventional-http-version",), 0),
    "casefold_http_method": (("--casefold-http-method",), 0),
    "header_map": (("--header-map",), 1), "http_parser": (("--http-parser",), 1),
    "forwarder_headers": (("--forwarder-headers",), 1),
    "dirty_apps": (("--dirty-app",), 1), "dirty_workers": (("--dirty-workers",), 1),
    "dirty_threads": (("--dirty-threads",), 1), "dirty_timeout": (("--dirty-timeout",), 1),
    "dirty_graceful_timeout": (("--dirty-graceful-timeout",), 1),
    "asgi_loop": (("--asgi-loop",), 1), "asgi_lifespan": (("--asgi-lifespan",), 1),
    "asgi_disconnect_grace_period": (("--asgi-disconnect-grace-period",), 1),
    "websocket_max_message_size": (("--websocket-max-message-size",), 1),
    "http2_initial_window_size": (("--http2-initial-window-size",), 1),
    "http2_max_concurrent_streams": (("--http2-max-concurrent-streams",), 1),
    "http2_max_frame_size": (("--http2-max-frame-size",), 1),
    "http2_max_header_list_size": (("--http2-max-header-list-size",), 1),
    "control_socket": (("--control-socket",), 1),
    "control_socket_mode": (("--control-socket-mode",), 1),
    "control_socket_disable": (("--no-control-socket",), 0),
    "worker_tmp_dir": (("--worker-tmp-dir",), 1), "sendfile": (("--no-sendfile",), 0),
    "reload_engine": (("--reload-engine",), 1), "spew": (("--spew",), 0),
    "enable_stdio_inheritance": (("-R", "--enable-stdio-inheritance"), 0),
    "disable_redirect_access_to_syslog": (("--disable-redirect-access-to-syslog",), 0),
    "proxy_allow_ips": (("--proxy-allow-from",), 1),
    "uwsgi_allow_ips": (("--uwsgi-allow-from",), 1),
}


def flag_verdict(setting):
    """What a flag of ``setting`` gets on the command line: (refused, the
    line to say, with %s for the flag as typed)."""
    why = NOT_HONOURED[setting][1]
    return why.startswith("refused"), "%s " + why.replace("%", "%%")
