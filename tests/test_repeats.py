"""Messages that can repeat for ever are rate-limited (issue 18: exercise 3 with
--lab-parent-keeps-client flooded the terminal with `accept() failed` ten times
a second): at most one line per second per kind, and the count of the rest."""
import re
import resource
import time

from tests.test_labs import send_request, wait_for

FLOOD_SECONDS = 3.0


def test_accept_failures_are_one_line_a_second_with_the_count_of_the_rest(start_server):
    server = start_server("tests.apps:hello", "--lab-parent-keeps-client")
    room = 2
    limit = server.ps.num_fds() + room
    server.ps.rlimit(resource.RLIMIT_NOFILE, (limit, limit))
    socks = [send_request(server, "/") for _ in range(room + 1)]
    try:
        wait_for(lambda: "accept() failed: Too many open files" in server.log_text(),
                 what="EMFILE in the error log")
        time.sleep(FLOOD_SECONDS)   # the accept is retried every 0.1 s meanwhile
        lines = [l for l in server.log_text().splitlines() if "accept() failed" in l]
        assert 2 <= len(lines) <= FLOOD_SECONDS + 2, lines
        counts = [int(re.search(r"\((\d+) more accept\(\) failed not logged in the last 1s\)$",
                                l).group(1)) for l in lines[1:]]
        assert all(5 <= n <= 10 for n in counts), lines   # ~9 retries a second left out
    finally:
        for sock in socks:
            sock.close()
    assert server.stop() == 0
    tail = re.findall(r"\[WARNING\] (\d+) more accept\(\) failed not logged$",
                      server.log_text(), re.M)
    assert len(tail) <= 1     # the last second's count, unless no retry was left out
