"""The lab, in a classroom: docs/labs.md's exercises run as a student runs them.

The commands come from docs/labs.md itself, so the guide and this test cannot
drift.  The guide's markers (its "How to read the blocks"):

- an exercise is a heading `## N. Title` followed by a line `Terminals: A, B, C.`;
- a ```sh block's first line names its terminal(s): `# A`, `# B C: ...`; with
  `(runs until stopped)` its last command stays in the foreground; with
  `from X's ready line` its `PID=4242 PORT=41234` line is typed with the pid and
  port of X's latest ready line; with `as root` / `as an ordinary user` only the
  student of that kind runs it;
- a line `#   press Ctrl-C` (Ctrl-S, Ctrl-Q) is those keys, in that terminal;
- `Before you start`'s block tagged `once in every terminal` runs in each new terminal.

Each exercise gets fresh terminals: `bash -i` in a pseudo-terminal under pexpect
(job control, `fg`, Ctrl-C and Ctrl-S behave as in a terminal emulator), each a
child subreaper as a desktop session's `systemd --user` is (exercise 12's orphan
is adopted by its terminal, not by this container's PID 1).  Blocks go in the
guide's order, line by line, each line waited for until its terminal's prompt
comes back.  Two students work at once, each in their own terminals, with their
own $USER (so their pidfiles differ); student "bob" does exercise 13 as the
ordinary user the guide describes (nobody, from a world-readable copy of the
checkout, with the system's Python).  After each exercise the test checks what
the guide says you see, and that the exercise cleaned up after itself: every
terminal back at its prompt, no job and no process left under it.  Every
process is killed at the end, whatever happened.
"""
import concurrent.futures
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pexpect
import psutil
import pytest

from tests.conftest import ROOT, default_python_only, kill_tree, needs

GUIDE = os.path.join(ROOT, "docs", "labs.md")
SYSTEM_PYTHON = "/usr/bin/python3"        # one that nobody may run (ours may sit in /root)
EXERCISE_SECONDS = 60.0                   # the longest exercise takes ~15 s alone
LINE_SECONDS = 30.0                       # one command line, at most
CLEANUP_SECONDS = 15.0                    # the end-of-exercise checks, beyond that
QUIET_SECONDS = 0.3                       # output settles before a key press
QUIET_GIVE_UP_SECONDS = 2.0               # ... or does not: a server logging on and on
READY_RE = re.compile(r"forkserver ready: pid (\d+) listening on http://127\.0\.0\.1:(\d+)\r?\n")
TEMPLATE_RE = re.compile(r"^(PID\w*)=4\d\d\d (PORT\w*)=4\d\d\d\d$")
TAG_RE = re.compile(r"^# (?P<terms>[A-D](?: [A-D])*)(?P<rest>(?:[ ,:(].*)?)$")
KEY_RE = re.compile(r"^#\s+press Ctrl-([A-Z])$")
PR_SET_CHILD_SUBREAPER = 36               # prctl(2), <linux/prctl.h>
SUBREAPER_SHIM = ("import ctypes, os, sys\n"
                  "ctypes.CDLL(None).prctl(%d, 1, 0, 0, 0)\n"
                  "os.execvp(sys.argv[1], sys.argv[1:])\n" % PR_SET_CHILD_SUBREAPER)

# ---------------------------------------------------------------- the guide
class Block:
    def __init__(self, terms, rest, lines):
        self.terms = terms
        self.foreground = "(runs until stopped)" in rest
        source = re.search(r"from ([A-D])'s ready line", rest)
        self.ready_from = source.group(1) if source else None
        self.role = ("root" if "as root" in rest else
                     "ordinary" if "as an ordinary user" in rest else None)
        self.lines = lines


class Exercise:
    def __init__(self, number, title, terminals, blocks):
        self.number, self.title, self.terminals, self.blocks = number, title, terminals, blocks


def sh_blocks(text):
    """[(first line, [other lines])] of the ```sh blocks in text."""
    return [(body.splitlines()[0], body.splitlines()[1:])
            for body in re.findall(r"^```sh\n(.*?)^```$", text, re.M | re.S)]


def parse_block(first, lines, where):
    tag = TAG_RE.match(first)
    assert tag, "%s: a shell block must start with '# A' (its terminals): %r" % (where, first)
    return Block(tag.group("terms").split(), tag.group("rest"), lines)


def parse_guide(text):
    """(setup lines, [Exercise]) from docs/labs.md."""
    before = text.split("## Before you start", 1)[1].split("\n## ", 1)[0]
    setup = [lines for first, lines in sh_blocks(before) if "once in every terminal" in first]
    assert len(setup) == 1, "Before you start needs one block 'once in every terminal'"
    exercises = []
    parts = re.split(r"^## (\d+)\. (.*)$", text.split("\n## `--trace`")[0], flags=re.M)
    for number, title, body in zip(parts[1::3], parts[2::3], parts[3::3]):
        where = "exercise %s" % number
        named = re.search(r"^Terminals: (.*?)[.(]", body, re.M)
        assert named, "%s must name its terminals up front ('Terminals: A, B, C.')" % where
        terminals = re.findall(r"\b([A-D])\b", named.group(1))
        blocks = [parse_block(first, lines, where) for first, lines in sh_blocks(body)]
        used = sorted({t for b in blocks for t in b.terms})
        assert used == sorted(terminals), "%s names terminals %s but uses %s" % (
            where, terminals, used)
        exercises.append(Exercise(int(number), title, terminals, blocks))
    return setup[0], exercises


# ---------------------------------------------------------------- a terminal
class Terminal:
    """bash -i in a pseudo-terminal; everything it printed in ``text``."""

    def __init__(self, name, student, env, cwd, user=None, python=sys.executable):
        self.name = name
        self.prompt = re.compile(r"\[lab:%s:%s (\d+)\]\$ " % (student, name))
        env = dict(env, PS1="[lab:%s:%s $?]$ " % (student, name), PS2="")
        bash = ["bash", "--norc", "--noprofile", "--noediting", "-i"]
        argv = [python, "-c", SUBREAPER_SHIM] + bash
        if user:
            argv = ["runuser", "-u", user, "--", "env", "-i"] + [
                "%s=%s" % kv for kv in sorted(env.items())] + argv
        self.proc = pexpect.spawn(argv[0], argv[1:], env=env, cwd=cwd, echo=False,
                                  encoding="utf-8", codec_errors="replace",
                                  dimensions=(50, 250))
        self.text = ""
        self.busy = False         # a command runs in the foreground
        self.readies = []         # (pid, port) of each ready line, in order
        self.scanned = 0
        self.commands = []        # (command, start, end, status)
        self.marks = []           # (what was sent, position in text)

    def pump(self):
        while True:
            try:
                chunk = self.proc.read_nonblocking(65536, timeout=0)
            except (pexpect.TIMEOUT, pexpect.EOF):
                return
            self.text += chunk
            for match in READY_RE.finditer(self.text, self.scanned):
                self.readies.append(match.groups())
                self.scanned = match.end()
            self.scanned = max(self.scanned, len(self.text) - 200)   # a line cut in two

    @property
    def ready(self):
        return self.readies[-1] if self.readies else None

    def close(self):
        kill_tree(self.proc.pid)
        try:
            self.proc.close(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


class Failure(Exception):
    pass


# ---------------------------------------------------------------- a student
class Student:
    def __init__(self, name, role, workdir, nobody_dir, lock):
        self.name, self.role, self.workdir = name, role, workdir
        self.nobody_dir, self.lock = nobody_dir, lock
        self.terms = {}
        self.deadline = 0.0
        self.failures = []        # (exercise, message)

    # ------------------------------------------------------------ waiting
    def pump(self):
        for term in self.terms.values():
            term.pump()

    def wait_for(self, predicate, what, seconds=LINE_SECONDS):
        deadline = min(time.monotonic() + seconds, self.deadline)
        while True:
            self.pump()
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise Failure("timed out waiting for %s" % what)
            time.sleep(0.02)

    def wait_prompt(self, term, start, what):
        match = self.wait_for(lambda: term.prompt.search(term.text, start), what)
        term.busy = False
        return match

    def wait_quiet(self, term):
        size, since = -1, time.monotonic()
        give_up = min(time.monotonic() + QUIET_GIVE_UP_SECONDS, self.deadline)
        while time.monotonic() - since < QUIET_SECONDS and time.monotonic() < give_up:
            self.pump()
            if len(term.text) != size:
                size, since = len(term.text), time.monotonic()
            time.sleep(0.02)

    # ------------------------------------------------------------ typing
    def free(self, term):
        """Back at its prompt: a foreground command ends, stops (SIGSTOP) or is killed."""
        if term.busy:
            self.wait_prompt(term, term.marks[-1][1], "terminal %s's command to end" % term.name)

    def type_line(self, term, line, foreground=False):
        self.free(term)
        start = len(term.text)
        term.marks.append((line, start))
        term.proc.sendline(line)
        if foreground:
            term.busy = True
            if "forkserver.py" in line:
                found = self.wait_for(
                    lambda: READY_RE.search(term.text, start) or term.prompt.search(term.text, start),
                    "the ready line in %s" % term.name)
                if found.re is not READY_RE:
                    raise Failure("%s: the server did not start: %s" % (
                        term.name, term.text[start:][-2000:]))
            else:
                self.wait_for(lambda: term.text[start:].strip(), "output in %s" % term.name)
            return
        match = self.wait_prompt(term, start, "%r in %s" % (line, term.name))
        term.commands.append((line, term.text[start:match.start()], int(match.group(1))))

    def press(self, term, key):
        self.wait_quiet(term)
        term.marks.append(("Ctrl-" + key, len(term.text)))
        term.proc.sendcontrol(key.lower())
        if key == "C" and term.busy:
            self.free(term)

    def run_block(self, block):
        if block.role and block.role != self.role:
            return
        commands = [l for l in block.lines if l.strip() and not l.lstrip().startswith("#")]
        last = max([i for i, l in enumerate(block.lines) if l in commands] or [-1])
        for name in block.terms:
            term = self.terms[name]
            if block.ready_from:
                ready = self.terms[block.ready_from].ready
                for line in commands:
                    assert TEMPLATE_RE.match(line), "not a ready-line template: %r" % line
                    names = TEMPLATE_RE.match(line).groups()
                    self.type_line(term, "%s=%s %s=%s" % (names[0], ready[0], names[1], ready[1]))
                continue
            for i, line in enumerate(block.lines):
                key = KEY_RE.match(line)
                if key:
                    self.press(term, key.group(1))
                elif line.strip() and not line.lstrip().startswith("#"):
                    self.type_line(term, line, block.foreground and i == last)

    # ------------------------------------------------------------ an exercise
    def open_terminals(self, exercise, setup):
        as_nobody = any(b.role == "ordinary" for b in exercise.blocks) and self.role == "ordinary"
        env = {"PATH": "%s:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" % os.path.join(
                   self.nobody_dir if as_nobody else self.workdir, "bin"),
               "HOME": self.nobody_dir if as_nobody else os.environ.get("HOME", "/root"),
               "USER": "nobody" if as_nobody else self.name,
               "LOGNAME": "nobody" if as_nobody else self.name,
               "TERM": "dumb", "LANG": "C.UTF-8"}
        for name in exercise.terminals:
            self.terms[name] = Terminal(
                name, self.name, env, self.nobody_dir if as_nobody else ROOT,
                user="nobody" if as_nobody else None,
                python=SYSTEM_PYTHON if as_nobody else sys.executable)
            self.wait_prompt(self.terms[name], 0, "terminal %s's first prompt" % name)
            for line in setup:
                if line.strip() and not line.startswith("#"):
                    self.type_line(self.terms[name], line)

    def check_clean(self):
        """Every terminal at its prompt, with no job and no process under it,
        and no pidfile left."""
        self.deadline = max(self.deadline, time.monotonic() + CLEANUP_SECONDS)
        for term in self.terms.values():
            try:
                self.free(term)
            except Failure:
                raise Failure("terminal %s still runs %r at the end of the exercise" % (
                    term.name, term.marks[-1][0]))
            self.type_line(term, "jobs")
            if term.commands[-1][1].strip():
                raise Failure("terminal %s has jobs left: %s" % (term.name, term.commands[-1][1]))
            left = psutil.Process(bash_of(term)).children(recursive=True)
            if left:
                raise Failure("terminal %s left processes running: %s" % (
                    term.name, [" ".join(p.cmdline()) or p.name() for p in left]))
        term = self.terms[min(self.terms)]
        self.type_line(term, 'ls "$PIDFILE" 2>/dev/null')
        if term.commands[-1][1].strip():
            raise Failure("the exercise left its pidfile behind: %s" % term.commands[-1][1])

    def run_exercise(self, exercise, setup):
        self.deadline = time.monotonic() + EXERCISE_SECONDS
        try:
            self.open_terminals(exercise, setup)
            for block in exercise.blocks:
                self.run_block(block)
            self.check_clean()
            run = Run(self, exercise)
            CHECKS[exercise.number](run)
            self.failures.extend((exercise.number, message) for message in run.failed)
        except (Failure, AssertionError, pexpect.ExceptionPexpect) as exc:
            self.failures.append((exercise.number, "%s: %s\n%s" % (
                type(exc).__name__, exc, self.transcript())))
        finally:
            for term in self.terms.values():
                term.close()
            self.terms = {}

    def transcript(self):
        return "\n".join("--- terminal %s:\n%s" % (t.name, t.text[-3000:])
                         for t in self.terms.values())

    def run_lab(self, setup, exercises):
        for exercise in exercises:
            if exercise.number == 13:   # nobody's process count is one for all students
                with self.lock:
                    self.run_exercise(exercise, setup)
            else:
                self.run_exercise(exercise, setup)
        return self.failures


def bash_of(term):
    """The pid of the terminal's bash (runuser and env sit above it as nobody)."""
    for proc in [psutil.Process(term.proc.pid)] + psutil.Process(term.proc.pid).children(True):
        if proc.name() == "bash":
            return proc.pid
    return term.proc.pid


# ---------------------------------------------------------------- what you see
class Run:
    """An exercise's transcript, for its checks."""

    def __init__(self, student, exercise):
        self.terms = student.terms
        self.exercise = exercise
        self.failed = []

    def out(self, term, command, nth=0):
        """The output of the nth line typed in ``term`` that contains ``command``
        (that starts with it, if it starts with ^)."""
        found = [out for line, out, _ in self.terms[term].commands
                 if (line.startswith(command[1:]) if command.startswith("^") else command in line)]
        assert len(found) > nth, "terminal %s ran %r only %d times" % (term, command, len(found))
        return found[nth]

    def text(self, term):
        return self.terms[term].text

    def after(self, term, sent, until=None):
        """What ``term`` printed from the moment ``sent`` was typed (to ``until``)."""
        marks = self.terms[term].marks
        start = [pos for what, pos in marks if what == sent][0]
        ends = [pos for what, pos in marks if pos > start and (until is None or what == until)]
        return self.terms[term].text[start:ends[0] if ends else None]

    def port(self, term="A"):
        return self.terms[term].ready[1]

    def check(self, ok, message):
        if not ok:
            self.failed.append(message)


def rows(output, port=None):
    """The lines of a ps/ss listing after its header."""
    lines = [l for l in output.strip().splitlines()[1:] if l.strip()]
    return [l for l in lines if port is None or ":%s" % port in l]


def seconds(output):
    return sorted(float(s) for s in re.findall(r"(?<![\d.])(\d+\.\d+)s\s*$", output, re.M))


def count(pattern, text):
    return len(re.findall(pattern, text, re.M))


def check_0(r):
    ps = r.out("C", "for i in 1 2 3")
    times = seconds(ps)
    r.check(len(times) == 3 and times[0] < 1.8 and times[-1] > 2.5,
            "exercise 0: the curls should end after about 1, 2 and 3 s: %s" % times)
    r.check(not re.search(r"^\s*\d+ ", ps, re.M), "exercise 0: ps should list no child: %s" % ps)


def check_1(r):
    a, b, stress = r.text("A"), r.text("B"), r.out("C", "stress.py")
    r.check("completed 60; failed 0" in stress, "exercise 1: stress.py: %s" % stress)
    sleeping = [int(n) for n in re.findall(r"sleeping (\d+)", b)]
    r.check(sleeping and max(sleeping) >= 15, "exercise 1: B's sleeping count: %s" % sleeping)
    r.check(set(re.findall(r"zombie (\d+)", b)) == {"0"}, "exercise 1: B saw zombies")
    r.check(len(set(re.findall(r"fds (\d+)", b))) == 1, "exercise 1: the parent's fds changed")
    trace = r"^\d+\.\d{6} \[\d+\] "
    for what in (r"fork: child \d+ for 127\.0\.0\.1:\d+", r"exit: status 0",
                 r"reaped \d+: exited with status 0"):
        n = count(trace + what, a)
        r.check(n == 60, "exercise 1: A should trace 60 %r, not %d" % (what, n))
    r.check(count(r"\] < GET", a) == 0, "exercise 1: --trace=process printed heads")


def check_2(r):
    port = r.port()
    listen = r.out("B", "ss -ltn")
    r.check(re.search(r"LISTEN\s+2\s+1\s", listen), "exercise 2: Recv-Q 2, Send-Q 1: %s" % listen)
    synsent = r.out("B", "syn-sent")
    r.check(rows(synsent, port), "exercise 2: no client in SYN-SENT: %s" % synsent)
    ps = r.out("B", "ps -o")
    r.check(len(rows(ps)) == 1, "exercise 2: one child only: %s" % ps)
    times = seconds(r.text("C"))
    r.check(len(times) == 4 and times[-1] > 5, "exercise 2: the four curls' times: %s" % times)


def check_3(r):
    before, after = int(r.out("B", "^ls /proc", 0)), int(r.out("B", "^ls /proc", 1))
    r.check(after == before + 3, "exercise 3: fds %d then %d, not +3" % (before, after))
    curls = r.out("C", "for i in 1 2 3")
    r.check(count(r"Hello, World!\s*\(curl exit 28\)", curls) == 3, "exercise 3: curls: " + curls)
    closewait = r.out("B", "close-wait")
    r.check(len(rows(closewait)) == 3, "exercise 3: 3 sockets in CLOSE-WAIT: " + closewait)
    failed = count(r"accept\(\) failed: Too many open files", r.text("A"))
    r.check(failed >= 1, "exercise 3: A should log accept() failed")
    r.check(failed <= 10, "exercise 3: accept() failed logged %d times" % failed)
    r.check(re.search(r"\(\d+ more accept\(\) failed not logged in the last 1s\)", r.text("A")),
            "exercise 3: A should count the accept() failures it did not log")
    flat = int(r.out("B", "^ls /proc", 2)), int(r.out("B", "^ls /proc", 3))
    r.check(flat[0] == flat[1], "exercise 3: without the switch fds should stay flat: %s" % (flat,))
    fine = r.out("C", "size_download")
    r.check(count(r"Hello, World!\s*14 bytes", fine) == 3, "exercise 3: curls: " + fine)


def check_4(r):
    curls = r.out("C", "seq 6")
    r.check(count(r"Hello, World!\s*\(curl exit 0\)", curls) == 5
            and count(r"\(curl exit 28\)", curls) == 1, "exercise 4: curls: " + curls)
    ps = r.out("B", "ps -o")
    r.check(count(r"\bZ\S*\s.*<defunct>", ps) == 5, "exercise 4: five zombies: " + ps)
    watch = r.out("B", "watch_children")
    r.check("zombie 5" in watch and "children=5" in watch and "watch_children exit 1" in watch,
            "exercise 4: watch_children: " + watch)


def zombies(output):
    return count(r"^\s*\d+ Z", output)


def check_reaper(r, number, left):
    first, second = r.out("B", "ps -o", 0), r.out("B", "ps -o", 1)
    r.check(zombies(first) == 4, "exercise %d: four zombies while stopped: %s" % (number, first))
    r.check(zombies(second) == left and len(rows(second)) == left,
            "exercise %d: %d zombies after fg: %s" % (number, left, second))
    resumed = r.after("A", "fg", "Ctrl-C").split("fork: child")[0]   # to the burst, if any
    reaped = count(r"reaped \d+: exited with status 0", resumed)
    r.check(count(r"SIGCHLD received", resumed) == 1 and reaped == 4 - left,
            "exercise %d: after fg, one SIGCHLD and %d reaps: %s" % (number, 4 - left, resumed))


def check_5(r):
    check_reaper(r, 5, 3)


def check_6(r):
    check_reaper(r, 6, 0)
    stress = r.out("C", "stress.py")
    r.check("completed 500; failed 0" in stress, "exercise 6: stress.py: " + stress)
    watch = r.out("B", "watch_children")
    r.check('"zombie": 0' in watch and "watch_children exit 0" in watch,
            "exercise 6: watch_children: " + watch)


def check_7(r):
    r.check("signals delivered while accept() blocked: 20 (sent 20)" in r.out("C", "--signals 20"),
            "exercise 7: " + r.out("C", "--signals 20"))
    r.check("accept() raised Interrupted" in r.out("C", "--raise"), "exercise 7: " + r.out("C", "--raise"))


def uss_kib(output):
    row = re.search(r"^\s*\d+\s+(\d+)\s+(\d+)\s+\d+\s+\d+\s*$", output, re.M)
    return int(row.group(2)) if row else None


def check_8(r):
    frozen, thawed = uss_kib(r.out("B", "cow_demo.py $PID", 0)), uss_kib(r.out("B", "cow_demo.py $PID2"))
    r.check(frozen and thawed and thawed - frozen > 10 * 1024,
            "exercise 8: USS with gc.freeze() %s KiB, without %s KiB" % (frozen, thawed))
    r.check(count(r'"rss_kib": \d+', r.text("C")) == 2, "exercise 8: the curls: " + r.text("C"))


def check_9(r):
    ps = r.out("B", "ps -ww")
    r.check("forkserver: parent http://127.0.0.1:%s children=1" % r.port() in ps
            and re.search(r"forkserver: child 127\.0\.0\.1:\d+ GET /\?\.\.\. HTTP/1\.1", ps),
            "exercise 9: ps: " + ps)


def check_10(r):
    kept, gone = r.out("B", "ss -ltnp", 0), r.out("B", "ss -ltn ", 0)
    pid = r.terms["A"].readies[0][0]
    r.check(rows(kept) and "pid=%s," % pid not in kept and "pid=" in kept,
            "exercise 10: the child should hold the listener: " + kept)
    r.check("curl exit 28" in r.out("B", "curl", 0), "exercise 10: " + r.out("B", "curl", 0))
    r.check(not rows(gone), "exercise 10: the port should be gone: " + gone)
    r.check("stopping (graceful), 1 children in flight" in r.text("A"), "exercise 10: A's log")
    r.check("curl exit 7" in r.out("B", "curl", 1), "exercise 10: " + r.out("B", "curl", 1))


def check_11(r):
    a = r.text("A")
    r.check("Forked child" in a and "reentrant call" in a, "exercise 11: A: " + a[-2000:])
    r.check("slow done" in r.out("C", "?s=0"), "exercise 11: the server should still serve")


def check_12(r):
    pid = r.terms["A"].readies[0][0]
    before, after = r.out("B", "grep PPid", 0), r.out("B", "grep PPid", 1)
    r.check(re.search(r"PPid:\s+%s\b" % pid, before), "exercise 12: PPid before: " + before)
    adopted = re.search(r"PPid:\s+(\d+)", after)
    r.check(adopted and adopted.group(1) != pid, "exercise 12: PPid after: " + after)
    r.check("bash" in r.out("B", "ps -o pid,args"), "exercise 12: the adopter (this "
            "terminal's subreaper shell): " + r.out("B", "ps -o pid,args"))
    for nth in (0, 1):
        gone = r.out("B", "ps -o pid,stat -p $CHILD", nth)
        r.check(not rows(gone), "exercise 12: the child should be gone: " + gone)
    r.check(r.out("B", "cat ").strip() == pid, "exercise 12: the stale pidfile")
    # The orphan's own deadline answers 500; the child of the default server
    # dies with its parent, without a response.
    r.check(count(r"500 Internal Server Error", r.text("C")) == 1
            and count(r"Empty reply from server", r.text("C")) == 1,
            "exercise 12: C: " + r.text("C"))


def check_13(r):
    stress = r.out("C", "stress.py")
    r.check(re.search(r"statuses: .*200 x\d", stress) and re.search(r"503 x\d", stress),
            "exercise 13: stress.py should see 200s and 503s: " + stress)
    r.check("slow done" in r.out("C", "curl"), "exercise 13: no recovery: " + r.out("C", "curl"))
    r.check("fork() failed: Resource temporarily unavailable" in r.text("A"), "exercise 13: A")


CHECKS = {n: globals()["check_%d" % n] for n in range(14)}


# ---------------------------------------------------------------- the test
def copy_for_nobody(folder):
    """What exercise 13 runs, readable by nobody, with the system's Python."""
    skip = shutil.ignore_patterns("__pycache__")
    for name in ("forkserver.py", "wsgi_handler.py"):
        shutil.copy(os.path.join(ROOT, name), folder)
    for name in ("forkparts", "scripts", "tests"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name), ignore=skip)
    os.mkdir(os.path.join(folder, "bin"))
    os.symlink(SYSTEM_PYTHON, os.path.join(folder, "bin", "python"))
    for path, dirs, files in os.walk(folder):
        os.chmod(path, 0o777 if path == folder else 0o755)
        for name in files:
            if not os.path.islink(os.path.join(path, name)):
                os.chmod(os.path.join(path, name), 0o644)


@default_python_only("the classroom drives terminals, not the interpreter")
@needs(sys.platform.startswith("linux"), "the lab is for Linux (/proc, ss, prlimit)")
@needs(os.geteuid() == 0, "needs root: a student runs exercise 13 as nobody")
@needs(os.path.exists(SYSTEM_PYTHON), "needs %s, a Python nobody may run" % SYSTEM_PYTHON)
@needs(all(shutil.which(tool) for tool in ("bash", "curl", "ss", "prlimit", "pgrep", "runuser")),
       "needs bash, curl, ss, prlimit, pgrep and runuser")
def test_two_students_follow_the_lab_guide_at_once(tmp_path):
    with open(GUIDE) as f:
        setup, exercises = parse_guide(f.read())
    assert [e.number for e in exercises] == list(range(14))
    pwd.getpwnam("nobody")
    nobody_dir = tempfile.mkdtemp(prefix="forkserver-classroom-")
    workdir = str(tmp_path)
    os.mkdir(os.path.join(workdir, "bin"))
    with open(os.path.join(workdir, "bin", "python"), "w") as f:   # not a symlink: a
        f.write('#!/bin/sh\nexec "%s" "$@"\n' % sys.executable)   # venv's python finds its venv
    os.chmod(os.path.join(workdir, "bin", "python"), 0o755)
    try:
        copy_for_nobody(nobody_dir)
        lock = threading.Lock()
        students = [Student("alice", "root", workdir, nobody_dir, lock),
                    Student("bob", "ordinary", workdir, nobody_dir, lock)]
        with concurrent.futures.ThreadPoolExecutor(len(students)) as pool:
            results = list(pool.map(lambda s: s.run_lab(setup, exercises), students))
    finally:
        shutil.rmtree(nobody_dir, ignore_errors=True)
    report(students, results)


def report(students, results):
    failed = ["%s, exercise %d: %s" % (student.name, number, message)
              for student, failures in zip(students, results) for number, message in failures]
    if failed:
        pytest.fail("\n\n".join(failed))
