"""forkparts/logs.py: the Log that the server, the child and gunicorn-style hooks share."""
import os

from forkparts.logs import Log


def lines_of(call, level="debug"):
    read, write = os.pipe()
    try:
        call(Log(error_fd=write, level=level))
    finally:
        os.close(write)
    with os.fdopen(read) as f:
        return f.read().splitlines()


def test_a_hook_written_for_gunicorns_logger_logs_its_arguments():
    """gunicorn's example config: server.log.info("Worker spawned (pid: %s)", worker.pid)."""
    lines = lines_of(lambda log: (log.info("Worker spawned (pid: %s)", 123),
                                  log.warn("old name %d", 7),
                                  log.log(20, "level as %s's number", "logging")))
    assert lines[0].endswith("[INFO] Worker spawned (pid: 123)")
    assert lines[1].endswith("[WARNING] old name 7")
    assert lines[2].endswith("[INFO] level as logging's number")


def test_a_message_without_arguments_is_not_formatted():
    assert lines_of(lambda log: log.info("100% sure"))[0].endswith("[INFO] 100% sure")


def test_arguments_that_do_not_fit_are_shown_not_raised():
    line = lines_of(lambda log: log.error("%d items", "x"))[0]
    assert "[ERROR] %d items ('x',) (formatting failed:" in line


def test_exc_info_adds_the_traceback_and_levels_below_the_log_level_are_dropped():
    def call(log):
        try:
            raise ValueError("boom")
        except ValueError:
            log.error("failed: %s", "x", exc_info=True)
        log.debug("hidden")
    lines = lines_of(call, level="info")
    assert lines[0].endswith("[ERROR] failed: x") and "ValueError: boom" in lines[-1]
    assert not any("hidden" in line for line in lines)


def test_a_repeating_message_is_written_once_a_second_then_counts_the_rest(capfd):
    now = [100.0]
    log = Log()

    def say(text):
        log.limited("accept() failed", "error", text, clock=lambda: now[0])
    for step in range(25):          # ten a second for 2.5 s
        now[0] = 100.0 + step * 0.1
        say("accept() failed: Too many open files")
    log.limited("fork() failed", "error", "fork() failed: EAGAIN", clock=lambda: now[0])
    log.repeats_left_out()
    lines = capfd.readouterr().err.splitlines()
    assert [l.split("] ", 3)[-1] for l in lines] == [
        "accept() failed: Too many open files",
        "accept() failed: Too many open files (9 more accept() failed not logged in the last 1s)",
        "accept() failed: Too many open files (9 more accept() failed not logged in the last 1s)",
        "fork() failed: EAGAIN",
        "4 more accept() failed not logged"]


def test_log_safe_escapes_what_a_reader_takes_for_a_line_end_or_a_field_end():
    from forkparts.logs import log_safe
    assert log_safe("plain /caf\u00c3\u00a9 ~!") == "plain /caf\u00c3\u00a9 ~!"   # as it was
    assert log_safe('a"b\\c') == 'a\\"b\\\\c'
    # C0 and C1 controls, and the Unicode separators: splitlines() ends a line at each.
    assert log_safe("1\n2\r3\x1e4\x855\x9f6\u20287\u2029") == \
        "1\\x0a2\\x0d3\\x1e4\\x855\\x9f6\\u20287\\u2029"
    assert len(log_safe("".join(map(chr, range(0x2030)))).splitlines()) == 1
