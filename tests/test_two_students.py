"""Two students on one machine (issue 18): servers started with --bind
127.0.0.1:0 and per-user pidfiles never collide; the ready line names the
port actually bound; a fixed port already taken says how to pick another."""
import psutil

from tests.conftest import http_get
from tests.parts.test_cli import run_cli

EXIT_LISTEN = 4


def listening_ports(pid):
    proc = psutil.Process(pid)
    found = getattr(proc, "net_connections", None) or proc.connections   # psutil < 6
    return {c.laddr.port for c in found("tcp") if c.status == psutil.CONN_LISTEN}


def test_two_servers_on_port_0_with_their_own_pidfiles_do_not_collide(start_server, tmp_path):
    servers = [start_server("tests.apps:pid", "--bind", "127.0.0.1:0",
                            "--pidfile", str(tmp_path / ("forkserver-student%d.pid" % n)))
               for n in (1, 2)]
    assert servers[0].port != servers[1].port
    for n, server in enumerate(servers, 1):
        assert listening_ports(server.pid) == {server.port}     # the ready line's port
        assert (tmp_path / ("forkserver-student%d.pid" % n)).read_text() == "%d\n" % server.pid
        assert http_get(server, "/")[0] == 200
    taken = run_cli("tests.apps:hello", "--bind", "127.0.0.1:%d" % servers[0].port)
    assert taken.returncode == EXIT_LISTEN
    assert taken.stderr.strip() == (
        "forkserver: error: cannot listen on 127.0.0.1:%d: Address already in use (another "
        "server listens there, perhaps another user's: --bind 127.0.0.1:0 picks a free port, "
        "named on the ready line)" % servers[0].port)
    for server in servers:
        assert server.stop() == 0
    assert list(tmp_path.glob("*.pid")) == []
