#!/usr/bin/env python3
"""Bounded fuzzing of forkserver's request parser and chunked reader.

With atheris installed: a coverage-guided run seeded with tests/malformed.py.
Without it: a hypothesis-driven run (random bytes, HTTP-ish fragments and
mutations of the table's cases).  Either way the property is the same: any
input gives a Request (or decoded body) or one of the parser's HTTP error
classes; any other exception is a finding.  Prints executions and findings;
exits 1 on a finding.

    python scripts/fuzz_parser.py [--seconds 60] [--engine auto|atheris|hypothesis]
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import wsgi_handler  # noqa: E402
from forkparts.bodies import ChunkedReader  # noqa: E402
from forkparts.http11 import ClientGone, HTTPError  # noqa: E402
from forkparts.parser import parse_head  # noqa: E402
from forkparts.wire import Connection  # noqa: E402
from tests import malformed  # noqa: E402

DEFAULT_SECONDS = 60.0
MAX_INPUT_BYTES = 4096
HYPOTHESIS_BATCH = 2000       # examples per hypothesis run; runs repeat until time is up
EXPECTED = (HTTPError, ClientGone)


class EOFSocket:
    def settimeout(self, timeout):
        pass

    def recv(self, n):
        return b""


CONFIG = wsgi_handler.HandlerConfig().freeze()


def one_input(data):
    """The target: the head reader + parser, then the rest as a chunked body."""
    conn = Connection(EOFSocket(), CONFIG, data)
    try:
        parse_head(conn.read_head(float("inf")))
    except EXPECTED:
        pass
    reader = ChunkedReader(conn, CONFIG.limits, 1.0)
    try:
        while reader.read_some(4096):
            pass
    except EXPECTED:
        pass


class Stats:
    def __init__(self):
        self.executions = 0
        self.findings = []

    def run(self, data):
        self.executions += 1
        try:
            one_input(data)
        except Exception as exc:  # noqa: BLE001 - a finding, reported below
            self.findings.append((data, "%s: %s" % (type(exc).__name__, exc)))


def run_atheris(seconds, stats):
    import atheris
    corpus = os.path.join(ROOT, ".fuzz-corpus")
    os.makedirs(corpus, exist_ok=True)
    for case in malformed.CASES:
        with open(os.path.join(corpus, case.name), "wb") as f:
            f.write(case.raw[:MAX_INPUT_BYTES])

    def target(data):
        stats.run(data)
        if stats.findings:
            raise RuntimeError(stats.findings[-1][1])

    atheris.instrument_all()   # coverage of wsgi_handler and its parts, already imported
    atheris.Setup([sys.argv[0], "-max_total_time=%d" % int(seconds),
                   "-max_len=%d" % MAX_INPUT_BYTES, corpus], target)
    atheris.Fuzz()


def run_hypothesis(seconds, stats):
    from hypothesis import HealthCheck, given, settings, strategies as st

    fragments = st.sampled_from([
        b"GET", b"POST", b" ", b"/", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n", b"\r", b":", b";",
        b"Host: a", b"Content-Length: ", b"Transfer-Encoding: chunked", b"0", b"5", b"ffffffff",
        b"\t", b"\x00", b"\xff", b"*", b"http://a", b"?", b"#", b"_", b",", b'"', b"=",
        b"Expect: 100-continue", b"hello", b"\r\n\r\n"])
    seeds = st.sampled_from(malformed.CASES).map(lambda c: c.raw[:MAX_INPUT_BYTES])
    mutated = st.tuples(seeds, st.integers(0, 300), st.binary(min_size=0, max_size=8),
                        st.integers(0, 8)).map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1] + t[3]:])
    inputs = st.one_of(st.binary(max_size=512), st.lists(fragments, max_size=60).map(b"".join),
                       mutated)
    deadline = time.monotonic() + seconds

    # stats.run catches everything, so hypothesis never shrinks: each batch is
    # fresh random inputs, and findings are reported as found.
    @settings(deadline=None, max_examples=HYPOTHESIS_BATCH, database=None,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def fuzz(data):
        stats.run(data)

    while time.monotonic() < deadline:
        fuzz()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    p.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    args = p.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    stats = Stats()
    started = time.monotonic()
    try:
        (run_atheris if engine == "atheris" else run_hypothesis)(args.seconds, stats)
    except RuntimeError:
        pass   # atheris stops at the first finding
    elapsed = time.monotonic() - started
    print("engine %s: %d executions in %.1fs (%.0f/s), %d findings" % (
        engine, stats.executions, elapsed, stats.executions / max(elapsed, 1e-9), len(stats.findings)))
    for data, error in stats.findings[:10]:
        print("  finding: %s\n    input: %r" % (error, data[:200]))
    return 1 if stats.findings else 0


if __name__ == "__main__":
    sys.exit(main())
