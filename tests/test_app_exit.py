"""An app that ends its child with os._exit is logged by the parent (the
issue's part 2): the child never reaches forkserver's own _exit, so nothing
it could log runs; the parent learns it from a mark the child did not set."""
import time

import pytest

from tests.conftest import raw_request

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
POLL_SECONDS = 0.05
LOG_WAIT_SECONDS = 10.0


def logged(server, text, timeout=LOG_WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log_text():
            return True
        time.sleep(POLL_SECONDS)
    return False


@pytest.mark.parametrize("app,status", [("exits_quietly", 0), ("exits_with_three", 3),
                                        ("exits_after_answering", 0)])
def test_os_exit_from_the_app_is_logged_with_its_status(start_server, app, status):
    server = start_server("tests.apps_exit:" + app)
    raw_request(server, REQUEST)
    assert logged(server, "exited with status %d from inside the app (os._exit)" % status), \
        server.log_text()
    if status == 3:   # the app's code, not forkserver's EXIT_MEMORY_LIMIT
        assert "out of memory" not in server.log_text()


def test_a_normal_child_is_not_reported(start_server):
    server = start_server("tests.apps_exit:hello")
    for _ in range(3):
        assert raw_request(server, REQUEST).startswith(b"HTTP/1.1 200 ")
    server.stop()
    assert "from inside the app" not in server.log_text()
