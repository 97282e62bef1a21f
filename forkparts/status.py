"""What the parent shows of itself: its process title and --status-file.

DESIGN note.  Both are rewritten from the parent's counts (live children,
high-water mark, connections served), at most once per TITLE_INTERVAL_SECONDS
for the title and once per STATUS_INTERVAL_SECONDS for the file, never per
connection.  A title change formats a string, writes the argv area and makes
a prctl(PR_SET_NAME) call: pages the last fork shared with its child, so
each costs a copy-on-write fault (docs/performance.md).  Rewritten after every
fork and every reap, it cost the parent 4 faults and about 40 us per
connection; a person reading `ps` cannot tell a title 0.1 s late.  The first
change after a quiet spell is shown at once; the loop's poll timeout
(title_due) brings the last one of a burst.  scripts/watch_children.py reads
the file; `ps` shows the title.
"""

import os
import time

from forkparts.privileges import write_atomically

STATUS_INTERVAL_SECONDS = 1.0            # --status-file: written at most this often
TITLE_INTERVAL_SECONDS = 0.1             # the process title: rewritten at most this often
DEFAULT_PROC_NAME = "forkserver"         # --proc-name's default (cli.py)


class Status:
    """The title and the status file of one parent."""

    def __init__(self, path, set_title, descriptions, log, proc_name=DEFAULT_PROC_NAME,
                 set_comm=None):
        self.path, self.set_title, self.log = path, set_title, log
        self.prefix = "%s: parent %s" % (proc_name, " ".join(descriptions))
        # setproctitle also makes the title's first 15 bytes the kernel's
        # name of the process (comm: ps -o comm, top), spaces and all.  From
        # 3.12 os.fork() warns if the process is multi-threaded, and finds its
        # thread count in /proc/self/stat by splitting the line at spaces:
        # each space in comm shifts the field it reads ("myshop: parent "
        # reads the priority, 20, and warns at every start).  So the parent's
        # comm is set back to its name without spaces after every title.
        self.set_comm = set_comm
        self.comm = "".join(proc_name.split())[:15] or DEFAULT_PROC_NAME
        self.title_dirty = False   # counts changed: retitle when title_due has come
        self.title_due = 0.0       # not before this (monotonic)
        self.file_dirty = bool(path)
        self.file_due = 0.0        # not before this (monotonic)
        if set_title is None and proc_name != DEFAULT_PROC_NAME:   # asked for, not had
            log.warning("--proc-name %r: process titles need setproctitle, which could not "
                        "be loaded (pip install setproctitle); ps shows the command line"
                        % proc_name)

    def update_title(self, children, high_water, now):
        self.title_dirty = False
        self.title_due = now + TITLE_INTERVAL_SECONDS
        self.file_dirty = bool(self.path)
        if self.set_title is not None:
            self.set_title("%s children=%d high-water=%d" % (self.prefix, children, high_water))
            if self.set_comm is not None:
                self.set_comm(self.comm)

    def next_write(self):
        return self.file_due if self.file_dirty else float("inf")

    def write(self, **counts):
        """Rewrite the file (atomically) if it is due: {"pid": ..., counts..., "time": ...}."""
        now = time.monotonic()
        if not self.file_dirty or now < self.file_due:
            return
        self.file_dirty = False
        self.file_due = now + STATUS_INTERVAL_SECONDS
        fields = ['"pid": %d' % os.getpid()]
        for name, value in counts.items():
            fields.append('"%s": %s' % (name, ("true" if value else "false")
                                        if isinstance(value, bool) else value))
        fields.append('"time": %.3f' % time.time())
        try:
            write_atomically(self.path, "{%s}\n" % ", ".join(fields))
        except OSError as exc:
            self.log.warning("cannot write --status-file %r: %s" % (self.path, exc.strerror))


def load_setproctitle():
    """The optional setproctitle's C extension (its setproctitle and
    setthreadtitle), or None.

    Its package __init__ imports ``logging`` (0.7 MB more parent, paid again
    in page tables by every fork), so the extension is loaded by itself."""
    import importlib.util
    try:
        spec = importlib.util.find_spec("setproctitle")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            names = sorted(os.listdir(folder))
        except OSError:   # EMFILE under a tiny ulimit -n: titles are optional
            return None
        for name in names:
            if name.startswith("_setproctitle.") and name.endswith(".so"):
                return load_extension("_setproctitle", os.path.join(folder, name))
    return None


def load_extension(name, path):
    import importlib.util
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.setproctitle   # noqa: B018 - no title without it (setthreadtitle: 1.3+)
        return module
    except (ImportError, OSError, AttributeError):
        return None
