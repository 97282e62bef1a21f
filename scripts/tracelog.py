"""tracelog.py: read a forkserver `--trace=process` log into each child's life.

Shared by scripts/timeline.py (the picture) and scripts/stress.py (zombie
lifetimes).  The format is the server's --trace contract (issue 18): every
trace line is

    <T> [<PID>] <text>

with T = time.monotonic() of the writing process (CLOCK_MONOTONIC, one clock
for every process on the machine) printed with 6 decimals, and these texts:

    <T> [P] fork: child C for 127.0.0.1:51000     the parent, after fork() returned
    <T> [C] exit: status 0                         the child, its last act
    <T> [P] SIGCHLD received                       the parent's handler ran
    <T> [P] reaped C: exited with status 0         waitpid returned C at T

Lines of other kinds (the ready line, log lines, `--trace=http` heads) are
skipped.  Lines of different processes may come out of T order (the child can
run before its parent returns from fork()), so nothing here relies on the
order of the lines: events are grouped by pid and ordered by T.

Zombie lifetime of a child = T(reaped C) - T(exit: C).  Its resolution is the
printed clock's (1 us) plus the time from the child's exit line to its
_exit(), a few microseconds.
"""
import re

# <T> [<PID>] <text>: T with decimals (the contract prints %.6f), PID decimal.
TRACE_LINE_RE = re.compile(r"^(\d+\.\d+) \[(\d+)\] (.*)$")
# What a process-mode text must look like, once it starts with its keyword.
FORK_RE = re.compile(r"^fork: child (\d+)(?: for (.*))?$")
EXIT_RE = re.compile(r"^exit: status (\d+)$")
SIGCHLD_RE = re.compile(r"^SIGCHLD received$")
# The default warm-up's trial child and its requests' client processes,
# forked and reaped before the first client (forkparts/prewarm.py): no
# children of the server's, so not drawn.
WARM_UP_SIGCHLD = "SIGCHLD received (the warm-up's trial child or client)"
REAP_RE = re.compile(r"^reaped (\d+): (.+)$")
KEYWORDS = ("fork:", "exit:", "SIGCHLD", "reaped")
# The server before the contract wrote "[PID] fork: child ..." without a time.
UNTIMED_RE = re.compile(r"^\[\d+\] (fork:|exit:|SIGCHLD|reaped )")
RESOLUTION_US = 1          # the clock is printed with 6 decimals
MIN_LINE_FIELDS_HINT = "<T> [<PID>] <text>, T with 6 decimals"


class TraceError(ValueError):
    """Bad trace input; the message names the line (1-based) when there is one."""


class Life:
    """One child's life as the trace shows it; a time is None when not traced."""

    def __init__(self, pid):
        self.pid = pid
        self.parent = None
        self.peer = None
        self.fork = self.exit = self.reap = None
        self.exit_status = None
        self.reaped_as = None     # the parent's words: "exited with status 0", ...

    @property
    def start(self):
        return min(t for t in (self.fork, self.exit, self.reap) if t is not None)

    @property
    def zombie_seconds(self):
        """Exit to reap, or None when either end is not in the trace."""
        if self.exit is None or self.reap is None:
            return None
        return max(0.0, self.reap - self.exit)


class Trace:
    """Everything process mode said: the lives, the SIGCHLD marks, the span."""

    def __init__(self):
        self.lives = []           # in the order of their first event's T
        self.sigchld = []         # (T, parent pid), ordered by T
        self.reaps = []           # (T, parent pid, child pid), ordered by T
        self.parents = []         # pids that forked or reaped, in order of first T
        self.first = self.last = None   # the span: first event, end of the trace
        self.last_event = None
        self.lines = 0            # trace lines read (all kinds)

    @property
    def never_reaped(self):
        """Children that exited (or were forked) and whose reap the trace lacks."""
        return [life for life in self.lives if life.reap is None]


def parse_line(number, line):
    """(T, pid, text) for a trace line, None for another kind of line."""
    line = line.rstrip("\r\n")
    match = TRACE_LINE_RE.match(line)
    if match:
        return float(match.group(1)), int(match.group(2)), match.group(3)
    if UNTIMED_RE.match(line):
        raise TraceError("line %d: a trace line without a timestamp: %r (the server must "
                         "write %s: run it with --trace=process)"
                         % (number, line[:80], MIN_LINE_FIELDS_HINT))
    head = line.split(" ", 2)
    if (len(head) == 3 and head[1].startswith("[")
            and head[2].startswith(KEYWORDS) and head[0][:1].isdigit()):
        raise TraceError("line %d: malformed trace line: %r (expected %s)"
                         % (number, line[:80], MIN_LINE_FIELDS_HINT))
    return None


def process_event(number, text):
    """(kind, fields) for a process-mode text, None for another mode's (and
    for the warm-up's SIGCHLD)."""
    if text == WARM_UP_SIGCHLD:
        return None
    for kind, regex in (("fork", FORK_RE), ("exit", EXIT_RE), ("sigchld", SIGCHLD_RE),
                        ("reap", REAP_RE)):
        match = regex.match(text)
        if match:
            return kind, match.groups()
    if text.startswith(KEYWORDS):
        raise TraceError("line %d: malformed %s line: %r" % (number, text.split()[0], text[:80]))
    return None


def read_events(lines):
    """[(T, line number, pid, kind, fields)] of the process-mode lines, and the
    count of trace lines of any mode."""
    events, trace_lines = [], 0
    for number, line in enumerate(lines, 1):
        parsed = parse_line(number, line)
        if parsed is None:
            continue
        trace_lines += 1
        t, pid, text = parsed
        event = process_event(number, text)
        if event is not None:
            events.append((t, number, pid) + event)
    events.sort()
    return events, trace_lines


def parse(lines, source="the input", until=None, until_ms=None):
    """A Trace from an iterable of lines; TraceError if it holds no process line.
    Events after T `until`, or after `until_ms` ms from the first, are left out
    (timeline.py: the reaps a server does while it stops are not its reaper's)."""
    events, trace_lines = read_events(lines)
    if not events:
        raise TraceError("no --trace=process lines in %s (%d trace lines of other kinds): "
                         "start the server with --trace=process" % (source, trace_lines))
    if until_ms is not None:
        until = events[0][0] + until_ms / 1000
    span_end = events[-1][0] if until is None else min(until, events[-1][0])
    if until is not None:
        events = [event for event in events if event[0] <= until]
        if not events:
            raise TraceError("no --trace=process line in %s before the cut" % source)
    trace = Trace()
    trace.lines = trace_lines
    trace.first, trace.last = events[0][0], span_end   # a cut trace lasts to the cut
    trace.last_event = events[-1][0]
    open_lives = {}
    for t, _number, pid, kind, fields in events:
        apply_event(trace, open_lives, t, pid, kind, fields)
    trace.lives.sort(key=lambda life: (life.start, life.pid))
    return trace


def apply_event(trace, open_lives, t, pid, kind, fields):
    if kind == "sigchld":
        trace.sigchld.append((t, pid))
        note_parent(trace, pid)
        return
    child = pid if kind == "exit" else int(fields[0])
    life = open_lives.get(child)
    # A pid's events in T order make one life until a kind comes again (a
    # reused pid).  Not "until the reap": the T of the parent's fork line is
    # taken after fork() returned and the client was closed, and a child can
    # exit and a lab handler reap it before that (--reaper once, seen live).
    if life is None or getattr(life, kind) is not None:
        life = open_lives[child] = Life(child)
        trace.lives.append(life)
    setattr(life, kind, t)
    if kind == "fork":
        life.parent, life.peer = pid, fields[1]
        note_parent(trace, pid)
    elif kind == "exit":
        life.exit_status = int(fields[0])
    else:
        life.parent, life.reaped_as = pid, fields[1]
        trace.reaps.append((t, pid, child))
        note_parent(trace, pid)


def note_parent(trace, pid):
    if pid not in trace.parents:
        trace.parents.append(pid)


def read_file(path, until_ms=None):
    """parse() the file at path ('-' for stdin); TraceError for an unreadable file."""
    import sys
    if path == "-":
        return parse(sys.stdin, "standard input", until_ms=until_ms)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse(f, path, until_ms=until_ms)
    except OSError as exc:
        raise TraceError("cannot read %s: %s" % (path, exc.strerror)) from None


def percentile(ordered, pct):
    """Nearest-rank percentile of a sorted list (None if empty)."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, -(-pct * len(ordered) // 100) - 1))
    return ordered[rank]


def zombie_lifetimes(trace):
    """The summary stress.py prints: max, p99, count, never reaped, resolution."""
    lifetimes = sorted(life.zombie_seconds for life in trace.lives
                       if life.zombie_seconds is not None)
    exited_unreaped = [life.pid for life in trace.lives
                       if life.reap is None and life.exit is not None]
    return {
        "children": len(trace.lives),
        "count": len(lifetimes),
        "max_ms": round(lifetimes[-1] * 1000, 3) if lifetimes else None,
        "p99_ms": round(percentile(lifetimes, 99) * 1000, 3) if lifetimes else None,
        "never_reaped": len(exited_unreaped),
        "never_reaped_pids": exited_unreaped,
        "no_exit_line": sum(1 for life in trace.lives
                            if life.exit is None and life.reap is not None),
        "running_at_end": sum(1 for life in trace.lives
                              if life.exit is None and life.reap is None),
        "resolution_us": RESOLUTION_US,
    }
