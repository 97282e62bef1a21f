#!/usr/bin/env python3
"""timeline.py: each child's life as a picture (SVG), from a --trace=process log.

One row per child, in the order the children started: running from fork to
exit (blue), zombie from exit to reap (red), a zombie never reaped drawn to
the end of the trace (pale red, labelled "never reaped").  The parent's row
carries a mark each time its SIGCHLD handler ran (orange) and a dot for each reap
(black): one SIGCHLD followed by several dots is a coalesced signal.  A time
axis in milliseconds from the first traced event, and a legend.  Standard
library only; the same input gives the same bytes out.

From a saved log (the server's stderr), from stdin, or from a live run that
starts the server with --trace=process, sends a burst, stops it by pid:

    python forkserver.py --trace=process tests.apps:hello 2> trace.log
    python scripts/timeline.py trace.log -o timeline.svg
    python forkserver.py --trace=process tests.apps:hello 2>&1 | python scripts/timeline.py - -o t.svg
    python scripts/timeline.py --run --requests 20 --concurrency 10 -o once.svg \\
        --save-trace once.log -- tests.apps:hello --reaper once

After `--` come forkserver's own arguments (an optional first word `forkserver`
or a path ending in forkserver.py names the server to run; default: the
forkserver.py beside this folder).  --run adds --trace=process and
--bind 127.0.0.1:0 unless those are given, and draws up to the moment it
sends SIGTERM: the reaps the server does while it stops (even with
--reaper none) are not its reaper's, so they are left out; the axis ends a
quarter of the burst's span after its last event, not after the --settle
wait.  For a saved log, --until MS draws only the first MS milliseconds, to
the same end.

With -o FILE it prints one line to stdout:

    timeline.svg: 20 children, 18 reaped, 2 never reaped, 5 SIGCHLD, 412.345 ms

Exit status: 0 the picture was written; 1 a --run failed (the server did not
start or stop, or no connection of the burst completed); 2 bad usage or bad
input (no trace lines, a malformed line: the message names its line number).
"""
import argparse
import os
import sys
from xml.sax.saxutils import escape, quoteattr

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import tracelog                      # noqa: E402 - the trace contract, shared with stress.py
from tracelog import TraceError      # noqa: E402

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2
LEFT_PX = 120                # row labels
RIGHT_PX = 190               # end-of-row notes ("never reaped")
DEFAULT_PLOT_PX = 900
TOP_PX = 64                  # title and legend
ROW_PX = 16
BAR_PX = 10
AXIS_PX = 36
MAX_TICKS = 10
MIN_SPAN_SECONDS = 0.001     # a trace of one instant still gets an axis
RUN_MARGIN_FRACTION = 0.25   # --run: the axis goes this far past the last event
COLOURS = {"alive": "#4878a8", "zombie": "#d9534f", "unreaped": "#f2b8b5",
           "sigchld": "#f0a020", "reap": "#222222", "grid": "#e4e4e4", "text": "#222222"}
LEGEND = (("alive", "rect", "running (fork to exit)"),
          ("zombie", "rect", "zombie (exit to reap)"),
          ("unreaped", "rect", "zombie never reaped (to end of trace)"),
          ("sigchld", "line", "SIGCHLD handler ran (parent)"),
          ("reap", "dot", "reaped: waitpid returned (parent)"))


class Scale:
    """Seconds of CLOCK_MONOTONIC to x pixels."""

    def __init__(self, start, end, plot_px):
        self.start = start
        self.end = max(end, start + MIN_SPAN_SECONDS)
        self.plot_px = plot_px
        self.px_per_s = plot_px / (self.end - self.start)

    def x(self, t):
        return LEFT_PX + (t - self.start) * self.px_per_s

    def ms(self, t):
        return (t - self.start) * 1000


def num(value):
    return "%.3f" % value


def rect(cls, x1, x2, y, title):
    return ('<rect class="%s" x="%s" y="%s" width="%s" height="%d" fill="%s">'
            '<title>%s</title></rect>' % (cls, num(x1), num(y), num(max(0.0, x2 - x1)),
                                          BAR_PX, COLOURS[cls.split()[-1]], escape(title)))


def text(x, y, body, cls="label", anchor="start"):
    return ('<text class="%s" x="%s" y="%s" text-anchor="%s" fill="%s">%s</text>'
            % (cls, num(x), num(y), anchor, COLOURS["text"], escape(body)))


def child_note(life):
    """What the row's end says: how it ended, or that it did not."""
    notes = []
    if life.fork is None:
        notes.append("fork not traced")
    elif life.exit is not None and life.exit < life.fork:
        notes.append("exited before its parent's fork: line")
    if life.reap is None:
        notes.append("never reaped" if life.exit is not None else "running at end of trace")
    elif life.reaped_as and life.reaped_as != "exited with status 0":
        notes.append(life.reaped_as)
    elif life.exit is None:
        notes.append("exit not traced")
    return "; ".join(notes)


def child_row(life, y, scale, end):
    """The <g> of one child: running bar, zombie bar, note."""
    bar_y = y + (ROW_PX - BAR_PX) / 2
    # The child exists from fork(); the parent's line is written once fork()
    # has returned in the parent, which may be after the child ran and exited.
    start = life.start
    alive_end = life.exit if life.exit is not None else (life.reap or end)
    parts = [text(LEFT_PX - 6, y + ROW_PX - 4, "child %d" % life.pid, anchor="end"),
             rect("alive", scale.x(start), scale.x(alive_end), bar_y,
                  "child %d running: +%.3f ms to +%.3f ms" % (
                      life.pid, scale.ms(start), scale.ms(alive_end)))]
    if life.exit is not None:
        cls, zombie_end = ("zombie", life.reap) if life.reap is not None else (
            "zombie unreaped", end)
        parts.append(rect(cls, scale.x(life.exit), scale.x(zombie_end), bar_y,
                          "child %d zombie: +%.3f ms to +%.3f ms (%.3f ms)%s" % (
                              life.pid, scale.ms(life.exit), scale.ms(zombie_end),
                              (zombie_end - life.exit) * 1000,
                              "" if life.reap is not None else ", never reaped")))
    note = child_note(life)
    if note:
        parts.append(text(LEFT_PX + scale.plot_px + 6, y + ROW_PX - 4, note, cls="note"))
    return ('<g class="row child" data-pid="%d">%s</g>' % (life.pid, "".join(parts)))


def parent_row(pid, trace, y, scale):
    """The parent's <g>: a mark per SIGCHLD, a dot per reap."""
    parts = [text(LEFT_PX - 6, y + ROW_PX - 4, "parent %d" % pid, anchor="end")]
    for t, who in trace.sigchld:
        if who == pid:
            parts.append('<line class="sigchld" x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" '
                         'stroke-width="2"><title>SIGCHLD at +%.3f ms</title></line>' % (
                             num(scale.x(t)), num(y + 1), num(scale.x(t)), num(y + ROW_PX - 1),
                             COLOURS["sigchld"], scale.ms(t)))
    for t, who, child in trace.reaps:
        if who == pid:
            parts.append('<circle class="reap" cx="%s" cy="%s" r="2" fill="%s">'
                         '<title>reaped %d at +%.3f ms</title></circle>' % (
                             num(scale.x(t)), num(y + ROW_PX / 2), COLOURS["reap"],
                             child, scale.ms(t)))
    return '<g class="row parent" data-pid="%d">%s</g>' % (pid, "".join(parts))


def tick_step_ms(span_ms):
    """1, 2 or 5 times a power of ten, so that at most MAX_TICKS ticks fit."""
    step = 0.001
    while True:
        for factor in (1, 2, 5):
            if span_ms / (step * factor) <= MAX_TICKS:
                return step * factor
        step *= 10


def axis(scale, top, bottom):
    """Grid lines across the rows and labelled ticks below them."""
    span_ms = scale.ms(scale.end)
    step = tick_step_ms(span_ms)
    parts = []
    for i in range(int(span_ms / step + 1e-9) + 1):
        ms = i * step
        x = LEFT_PX + ms / 1000 * scale.px_per_s
        parts.append('<line class="tick" x1="%s" y1="%d" x2="%s" y2="%d" stroke="%s"/>'
                     % (num(x), top, num(x), bottom + 4, COLOURS["grid"]))
        parts.append(text(x, bottom + 16, "%g ms" % round(ms, 6), cls="tick-label",
                          anchor="middle"))
    parts.append(text(LEFT_PX + scale.plot_px / 2, bottom + 32,
                      "time since the first traced event (CLOCK_MONOTONIC)",
                      cls="axis-title", anchor="middle"))
    return '<g class="axis">%s</g>' % "".join(parts)


def legend(y):
    parts, x = [], LEFT_PX
    for cls, shape, label in LEGEND:
        if shape == "rect":
            parts.append('<rect x="%d" y="%d" width="14" height="%d" fill="%s"/>'
                         % (x, y, BAR_PX, COLOURS[cls]))
        elif shape == "line":
            parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>'
                         % (x + 7, y - 1, x + 7, y + BAR_PX + 1, COLOURS[cls]))
        else:
            parts.append('<circle cx="%d" cy="%d" r="2" fill="%s"/>'
                         % (x + 7, y + BAR_PX // 2, COLOURS[cls]))
        parts.append(text(x + 18, y + BAR_PX, label, cls="legend-label"))
        x += 24 + 6 * len(label)
    return '<g class="legend">%s</g>' % "".join(parts)


def render(trace, title="forkserver --trace=process", end=None, plot_px=DEFAULT_PLOT_PX):
    """The SVG document (str) for a tracelog.Trace; end: the axis' last T."""
    end = max(trace.last, end if end is not None else trace.last)
    scale = Scale(trace.first, end, plot_px)
    rows = [parent_row(pid, trace, TOP_PX + i * ROW_PX, scale)
            for i, pid in enumerate(trace.parents)]
    first_child_y = TOP_PX + len(trace.parents) * ROW_PX
    rows += [child_row(life, first_child_y + i * ROW_PX, scale, scale.end)
             for i, life in enumerate(trace.lives)]
    bottom = TOP_PX + (len(trace.parents) + len(trace.lives)) * ROW_PX
    width = LEFT_PX + plot_px + RIGHT_PX
    height = bottom + AXIS_PX + 8
    head = ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
            'viewBox="0 0 %d %d" font-family="sans-serif" font-size="11" '
            'data-start=%s data-end=%s data-left-px="%d" data-px-per-ms=%s>'
            % (width, height, width, height, quoteattr("%.6f" % scale.start),
               quoteattr("%.9f" % scale.end), LEFT_PX, quoteattr("%.9f" % (scale.px_per_s / 1000))))
    body = ['<?xml version="1.0" encoding="UTF-8"?>', head,
            "<title>%s</title>" % escape(title),
            '<rect x="0" y="0" width="%d" height="%d" fill="white"/>' % (width, height),
            text(LEFT_PX, 20, title, cls="title"), legend(34), axis(scale, TOP_PX, bottom)]
    return "\n".join(body + rows + ["</svg>", ""])


def summary_line(name, trace, end=None):
    end = max(trace.last, end if end is not None else trace.last)
    reaped = sum(1 for life in trace.lives if life.reap is not None)
    unreaped = sum(1 for life in trace.lives if life.reap is None and life.exit is not None)
    return "%s: %d children, %d reaped, %d never reaped, %d SIGCHLD, %.3f ms" % (
        name, len(trace.lives), reaped, unreaped, len(trace.sigchld),
        (end - trace.first) * 1000)


def build_parser():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [TRACE] [-o OUT.svg] | %(prog)s --run [options] -o OUT.svg "
              "-- [forkserver] ARGS...")
    p.add_argument("trace", nargs="?", default=None, metavar="TRACE",
                   help="a --trace=process log, or - for standard input")
    p.add_argument("-o", "--output", default="-", help="the SVG file (default: stdout)")
    p.add_argument("--title", default=None, help="the picture's title")
    p.add_argument("--width", type=int, default=DEFAULT_PLOT_PX, metavar="PX",
                   help="width of the time axis in pixels (default %(default)s)")
    p.add_argument("--until", type=float, default=None, metavar="MS",
                   help="draw only the first MS milliseconds (e.g. to leave out the reaps "
                        "of the server's shutdown)")
    g = p.add_argument_group("live run (--run ... -- forkserver arguments)")
    g.add_argument("--run", action="store_true",
                   help="start the server with --trace=process, send a burst, stop it")
    g.add_argument("--requests", type=int, default=20, help="connections in the burst")
    g.add_argument("--concurrency", type=int, default=10, help="connections at once")
    g.add_argument("--path", default="/", help="request target (default %(default)s)")
    g.add_argument("--settle", type=float, default=0.5,
                   help="seconds to wait after the burst before stopping the server")
    g.add_argument("--save-trace", metavar="FILE", help="also keep the server's stderr here")
    return p


def write_output(path, svg):
    if path == "-":
        sys.stdout.write(svg)
        return
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(svg)


def fail(code, message):
    sys.stderr.write("timeline.py: error: %s\n" % message)
    return code


def split_argv(argv):
    """(our arguments, the server's) split at the first '--'."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def main(argv=None):
    ours, server_args = split_argv(argv)
    parser = build_parser()
    opts = parser.parse_args(ours)
    if opts.width < 100 or opts.width > 100000:
        parser.error("--width must be between 100 and 100000 pixels")
    if opts.until is not None and (opts.run or not opts.until > 0):
        parser.error("--until takes a number of ms above 0, for a trace file (--run draws "
                     "up to the moment it stops the server)")
    if opts.run:
        import liverun           # only a live run needs the process machinery
        try:
            trace_text, end = liverun.run(opts, server_args or [])
        except liverun.RunError as exc:
            return fail(exc.code, str(exc))
        lines, source, end = trace_text.splitlines(), "the server's stderr", end
    elif server_args is not None:
        parser.error("arguments after -- are the server's: they need --run")
    elif opts.trace is None:
        parser.error("give a trace file, - for standard input, or --run")
    else:
        lines, source, end = None, opts.trace, None
    try:
        if lines is not None:
            trace = tracelog.parse(lines, source, until=end)
        else:
            trace = tracelog.read_file(opts.trace, until_ms=opts.until)
    except TraceError as exc:
        return fail(EXIT_USAGE, str(exc))
    if opts.run:   # the burst, not the --settle wait, fills the picture
        trace.last = end = min(end, trace.last_event + max(
            RUN_MARGIN_FRACTION * (trace.last_event - trace.first), MIN_SPAN_SECONDS))
    title = opts.title or "forkserver --trace=process: %s" % (
        "live run" if opts.run else "standard input" if source == "-"
        else os.path.basename(source))
    try:
        write_output(opts.output, render(trace, title, end, opts.width))
    except OSError as exc:
        return fail(EXIT_USAGE, "cannot write %s: %s" % (opts.output, exc.strerror))
    if opts.output != "-":
        print(summary_line(opts.output, trace, end))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
