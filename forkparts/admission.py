"""Admission control: may the parent fork one more child now?

DESIGN note.  The parent's loop asks one question before each fork, and four
rules answer it: the child cap (--max-children; at the cap the parent stops
accepting and new connections wait in the kernel's backlog), one client's
share (--max-children-per-ip, counting its children and the connections the
accept filter holds for it), the fork rate (--max-fork-rate, a token bucket)
and a short back-off after accept() or fork() fails for lack of resources.
They are kept together, apart from the loop, so the loop reads as the
tutorial's and each rule can be tested without a socket.  The cap's changes
at run time (TTIN/TTOU, resize) are here too.
"""

import time

INFINITY = float("inf")
MIN_MAX_CHILDREN = 1                     # TTOU never lowers the cap below this


class Admission:
    """The rules, and the counts they need."""

    def __init__(self, opts):
        self.cap = opts.max_children or INFINITY
        self.per_ip_limit = opts.max_children_per_ip
        self.rate = opts.max_fork_rate
        self.counts_forks = bool(self.per_ip_limit or self.rate)   # forked() has work
        self.per_ip = {}
        self.tokens, self.tokens_at = max(self.rate, 1.0), time.monotonic()
        self.paused_until = 0.0

    def may_fork(self, live_children):
        """Is a child slot free (--max-children, --max-fork-rate, a back-off)?"""
        now = time.monotonic()
        if self.paused_until:
            if now < self.paused_until:
                return False
            self.paused_until = 0.0
        if live_children >= self.cap:
            return False
        if self.rate:
            self.refill(now)
            if self.tokens < 1:
                self.paused_until = now + (1 - self.tokens) / self.rate
                return False
        return True

    def refill(self, now):
        # The bucket holds at least one token: with a rate below 1/s (one fork
        # every few seconds) a bucket of `rate` tokens would never allow one.
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.tokens_at) * self.rate)
        self.tokens_at = now

    def forked(self, addr):
        """A child was forked for ``addr`` (called only when counts_forks)."""
        self.count_ip(addr, 1)
        if self.rate:
            self.tokens -= 1

    def pause(self, seconds):
        """No fork for ``seconds``: accept() or fork() just failed for lack of
        descriptors or memory, and trying again at once would spin."""
        self.paused_until = time.monotonic() + seconds

    def over_ip_limit(self, addr):
        """--max-children-per-ip: is this client at its limit?"""
        ip = addr[0] if isinstance(addr, tuple) else ""
        return bool(ip) and self.per_ip.get(ip, 0) >= self.per_ip_limit

    def count_ip(self, addr, delta):
        """--max-children-per-ip counts a client's children and the connections
        the accept filter holds for it, so one address cannot fill either."""
        if not self.per_ip_limit or not isinstance(addr, tuple):
            return
        count = self.per_ip.get(addr[0], 0) + delta
        if count > 0:
            self.per_ip[addr[0]] = count
        else:
            self.per_ip.pop(addr[0], None)


def resize(server, delta, why):
    """TTIN/TTOU: --max-children one up or down (never below 1), as
    gunicorn's workers; nworkers_changed(server, new, old)."""
    old = server.opts.max_children
    if not old:
        server.log.info("%s: --max-children is 0 (no cap); nothing to change" % why)
        return
    new = max(old + delta, MIN_MAX_CHILDREN)
    server.log.info("%s: --max-children %d -> %d" % (why, old, new))
    if new != old:
        server.opts.max_children = server.admission.cap = new
        server.status.file_dirty = bool(server.opts.status_file)
        server.run_hook("nworkers_changed", server, new, old)
