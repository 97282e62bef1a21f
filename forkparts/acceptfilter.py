"""The accept filter: connections the parent holds until their request is ready.

DESIGN note.  A child costs a fork (1-3 ms) and a slot of --max-children; a
client that connects and sends nothing, or trickles its head or a small body,
must hold neither.  So the parent looks at what a new connection has sent,
without blocking, and forks only once the request is READY (request_state).
Until then the connection is *parked* here: polled beside the listeners, with
a deadline (--header-timeout for the head, then --min-body-rate for a small
body, as Apache's mod_reqtimeout).  Idle kept-alive connections that children
hand back (SCM_RIGHTS, on SIGHUP or a stop) are parked here too, so that their
next request meets a child with the code of now.

This is a second non-blocking I/O system inside a forking server, so it is a
room of its own: an AcceptFilter owns the parked connections and their poll
registrations, and calls back into the server only to ask whether a child may
be forked (``may_fork``) and to fork one (``fork``).
"""

import resource
import select
import socket
import time

from forkparts.http11 import HTTPError, Limits, error_response
from forkparts.logs import format_addr
from forkparts.parser import check_partial_head, find_head_end

# A request body of at most this (by Content-Length) is read by the filter
# before the fork, so a client that trickles a small body holds no child;
# larger bodies are the child's, under --read-timeout and --timeout.
PARENT_BODY_BYTES = 64 * 1024
# Requests that (nearly always) have no body: forked as soon as the head is in.
NO_BODY_PREFIXES = (b"GET ", b"HEAD ")
DEFAULT_MAX_PENDING = 1024               # connections parked at most
RESERVED_FDS = 64                        # descriptors --max-pending leaves for the rest
STOP_HEAD_GRACE_SECONDS = 1.0            # SIGTERM: what an incomplete parked head has left
HALF_OPEN_PATIENCE_SECONDS = 1.0         # SIGTERM: how long a listener waits for half-open ones
HALF_OPEN_CHECK_SECONDS = 0.05           # ... asking the kernel at most this often (~3 ms a time)
REFUSE_DRAIN_BYTES = 1 << 20             # the most refuse() reads before it closes
HANDBACK_FDS_PER_MESSAGE = 16            # wsgi_handler sends one; room for more
MSG_DONTWAIT = int(socket.MSG_DONTWAIT)  # an int: the enum member's page is not touched
INFINITY = float("inf")

HEAD_INCOMPLETE, BODY_INCOMPLETE, READY = range(3)   # request_state()


class Parked:
    """A connection held by the accept filter until its request is ready
    (request_state): the head, and a small body with it."""
    __slots__ = ("sock", "addr", "data", "accepted_at", "deadline", "head_end", "head_at",
                 "idle", "state")

    def __init__(self, sock, addr, data, accepted_at, deadline):
        self.sock = sock
        self.addr = addr
        self.data = data
        self.accepted_at = accepted_at
        self.deadline = deadline
        self.head_end = 0      # where the body starts, once the head is in
        self.head_at = 0.0     # when the head was complete
        self.idle = False      # a kept-alive connection handed back, no byte since
        self.state = HEAD_INCOMPLETE   # request_state(data), kept as data comes in

    def body_progress(self, now, grace, rate):
        """The head is in and the filter waits for a small body: mod_reqtimeout's
        MinRate.  The body gets a grace of `grace` seconds from the head, and
        a second more for each `rate` bytes received (--min-body-rate), so a body
        trickled at 1 byte every 5 s is cut while a slow, honest link goes on."""
        if not self.head_end:
            self.head_end, self.head_at = find_head_end(self.data), now
        received = len(self.data) - self.head_end
        self.deadline = self.head_at + grace + received / rate


class AcceptFilter:
    """The parked connections of one parent, and what happens to them."""

    def __init__(self, opts, log, poller, head_limit, may_fork, fork, count_ip):
        self.opts, self.log, self.poller = opts, log, poller
        self.limit = head_limit
        # A line over its limit goes to a child now, to answer 414/431 (request_state).
        self.limits = Limits(opts.limit_request_line, opts.limit_request_fields,
                             opts.limit_request_field_size, head_limit)
        self.bodies = opts.min_body_rate > 0   # --min-body-rate 0: no rate to hold them to
        self.may_fork, self.fork, self.count_ip = may_fork, fork, count_ip
        self.parked = {}          # fd -> Parked
        self.stopping = False
        self.patience_until = INFINITY   # set by drain_backlog
        self.check_half_open_at = INFINITY   # while a stop keeps listeners open
        self.stop_deadline = INFINITY
        self.view = None
        self.renew_buffer()

    def renew_buffer(self):
        """One receive buffer for every first look (see first_look); made again
        after a reload, before the heap is frozen, so it is the parent's own."""
        self.view = memoryview(bytearray(self.limit + 1))

    def first_look(self, sock, addr, now):
        """What a new connection has sent, if its request is ready; None if
        it was parked or is gone."""
        try:
            # Into the one buffer: recv() would malloc limit+1 bytes (64 KiB)
            # per connection and shrink them, writing heap pages that every
            # fork has just shared.
            count = sock.recv_into(self.view, self.limit + 1, MSG_DONTWAIT)
        except BlockingIOError:
            count = -1         # nothing sent yet: parked below
        except OSError:
            sock.close()       # reset before a word
            return None
        if count == 0:
            sock.close()       # closed without a word
            return None
        # A GET or HEAD whose CRLFCRLF is in is ready (a malformed head is
        # the child's to answer): request_state's full check for the rest.
        # (find, not "in": bytes.__contains__ first tries the argument as an
        # int, and raises and drops a TypeError for every connection.)
        try:   # each step copies the head: MemoryError under RLIMIT_AS
            data = self.view[:count].tobytes() if count > 0 else b""
            if data.find(b"\r\n\r\n") == -1 or not data.startswith(NO_BODY_PREFIXES):
                state = request_state(data, self.limit, self.bodies, self.limits)
                if state != READY:
                    self.park(sock, addr, data, now, state)
                    return None
        except MemoryError:
            return out_of_memory(self.log, len(self.parked), sock, addr)
        return data

    # ------------------------------------------------------------ holding
    def park(self, sock, addr, data, now, state, idle=False):
        if len(self.parked) >= self.opts.max_pending:
            self.drop_oldest()
        try:
            held = bytearray(data)
        except MemoryError:
            return out_of_memory(self.log, len(self.parked), sock, addr)
        fd = sock.fileno()
        parked = self.parked[fd] = Parked(sock, addr, held, now, now + self.opts.header_timeout)
        parked.state = state
        if idle:   # handed back: idle for up to --keep-alive, then closed silently
            parked.idle = True
            parked.deadline = now + (STOP_HEAD_GRACE_SECONDS if self.stopping
                                     else self.opts.keep_alive)
        if state == BODY_INCOMPLETE:
            parked.body_progress(now, self.opts.header_timeout, self.opts.min_body_rate)
        if self.stopping and not idle:   # taken during a stop (drain_backlog)
            self.hurry(parked, now)
        self.poller.register(fd, select.POLLIN)
        self.count_ip(addr, 1)

    def drop_oldest(self):
        """Full: an idle handed-back connection goes first, closed without a
        word (a 503 on it could be taken as the answer to its next request)."""
        oldest = min(self.parked.values(), key=lambda p: (not p.idle, p.accepted_at))
        self.log.limited("accept filter full", "warning", "accept filter full (%d): dropping %s"
                         % (len(self.parked), format_addr(oldest.addr)))
        self.unpark(oldest.sock.fileno())
        if oldest.idle:
            oldest.sock.close()
        else:
            refuse(oldest.sock, 503)

    def unpark(self, fd):
        try:
            self.poller.unregister(fd)
        except KeyError:
            pass  # a complete head waiting for a free child is no longer polled
        parked = self.parked.pop(fd)
        self.count_ip(parked.addr, -1)
        return parked

    def begin_request(self, parked, now):
        """A request begins on an idle handed-back connection: from now on it
        is held like a new one (--header-timeout, or the stop's grace)."""
        parked.idle, parked.accepted_at = False, now
        parked.deadline = now + (STOP_HEAD_GRACE_SECONDS if self.stopping
                                 else self.opts.header_timeout)

    def take_back(self, handback):
        """Idle kept-alive connections a child handed back on the Drain notice
        (wsgi_handler ConnectionHandler.hand_back): held like new ones, so
        their next request gets a child with the code of now (while stopping,
        for STOP_HEAD_GRACE_SECONDS: see stop)."""
        for _ in range(self.opts.max_pending):
            try:
                _, fds, _, _ = socket.recv_fds(handback, HANDBACK_FDS_PER_MESSAGE, 1)
            except (BlockingIOError, InterruptedError):
                return
            for fd in fds:
                self.hold_handed_back(socket.socket(fileno=fd))

    def hold_handed_back(self, sock):
        if len(self.parked) >= self.opts.max_pending and close_if_quiet(sock):
            return
        try:
            addr = sock.getpeername()
        except OSError:
            sock.close()   # the client left meanwhile
            return
        self.park(sock, addr, b"", time.monotonic(), HEAD_INCOMPLETE, idle=True)

    # ------------------------------------------------------------ reading
    def on_readable(self, fd):
        parked = self.parked[fd]
        try:
            data = parked.sock.recv(self.limit + 1 + PARENT_BODY_BYTES - len(parked.data),
                                    MSG_DONTWAIT)
            since, parked.data = len(parked.data), parked.data + data   # since: the last look
            state = data and request_state(parked.data, self.limit, self.bodies, self.limits, since)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        except MemoryError:
            self.unpark(fd)
            return out_of_memory(self.log, len(self.parked), parked.sock, parked.addr)
        if not data:
            self.unpark(fd)
            if parked.data.strip(b"\r\n") and not parked.idle:
                refuse(parked.sock, 400)   # closed inside the head: as the child would say
            else:
                parked.sock.close()
            return
        if parked.idle:   # the next request of a handed-back connection begins
            self.begin_request(parked, time.monotonic())
        parked.state = state
        if state == BODY_INCOMPLETE:
            parked.body_progress(time.monotonic(), self.opts.header_timeout,
                                 self.opts.min_body_rate)
        if self.stopping and state != HEAD_INCOMPLETE:   # its head is in: the stop's deadline
            self.hurry(parked, time.monotonic())
        if state == READY:
            self.release(fd, parked)

    def release(self, fd, parked):
        """Fork a ready request, or, with no child slot free, stop polling it
        (its body would keep poll() busy): check forks it when a slot frees up."""
        if self.may_fork():
            self.fork_parked(fd, parked)
        else:
            self.poller.unregister(fd)

    def fork_parked(self, fd, parked):
        self.unpark(fd)
        try:
            data = bytes(parked.data)
        except MemoryError:
            return out_of_memory(self.log, len(self.parked), parked.sock, parked.addr)
        self.fork(parked.sock, parked.addr, data, parked.accepted_at)

    # ------------------------------------------------------------ deadlines
    def next_deadline(self):
        """The next time check or unsettled has something to do."""
        first = min(p.deadline for p in self.parked.values()) if self.parked else INFINITY
        return min(first, self.check_half_open_at)

    def check(self):
        """Fork what is ready and may be; answer or close what is past its deadline."""
        now = time.monotonic()
        for fd, parked in list(self.parked.items()):
            if now >= parked.deadline:
                self.expire(self.unpark(fd), now)
            elif parked.state == READY and self.may_fork():
                self.fork_parked(fd, parked)

    def expire(self, parked, now):
        if parked.idle:   # RFC 9112 9.5: an idle connection is closed, no 408
            self.close_idle(parked, now)
        else:
            refuse_late(self.log, parked, now, self.stopping)

    def close_idle(self, parked, now):
        """Close an idle parked connection, unless a request has just begun on
        it: then it is held like one that is coming in."""
        if close_if_quiet(parked.sock):
            return
        self.begin_request(parked, now)
        self.parked[parked.sock.fileno()] = parked
        self.poller.register(parked.sock.fileno(), select.POLLIN)
        self.count_ip(parked.addr, 1)

    # ------------------------------------------------------------ stopping
    def drain_backlog(self, listeners, backlog):
        """A graceful stop first takes the connections the kernel has already
        accepted for us: closing a listener resets those still in its queue,
        and a proxy does not retry a POST whose connection was reset (502).
        They are held like any new connection; stop decides.  No new
        connection enters a queue while it is taken (Listener.refuse_new);
        then each listener stops listening, in the copies of the children
        just forked too (Listener.stop_listening), but one with a connection
        still half open (Listener.half_open) is returned, to stay open: the
        server goes on accepting from it, and calls unsettled each loop turn
        (next_deadline wakes it), for up to HALF_OPEN_PATIENCE_SECONDS."""
        now = time.monotonic()
        self.check_half_open_at, self.patience_until = now, now + HALF_OPEN_PATIENCE_SECONDS
        for listener in listeners:
            listener.refuse_new()
        return self.unsettled(listeners, backlog)

    def unsettled(self, listeners, backlog, wait=True):
        """Take each listener's queue, then stop it listening, unless a
        connection to it is still half open and (``wait``) there is patience
        left: the listeners kept open for that are returned.  The kernel is
        asked at most every HALF_OPEN_CHECK_SECONDS; in between, all are kept."""
        now = time.monotonic()
        checking = not wait or now >= self.check_half_open_at
        keep = []
        for listener in listeners:
            # Asked first: one that completes meanwhile is in the queue taken next.
            half_open = listener.half_open() if checking else None
            self.take_queue(listener, backlog, now)
            if wait and now < self.patience_until and half_open != 0:
                keep.append(listener)
                continue
            if half_open:   # still silent (most likely a spare connection)
                warn_half_open(self.log, half_open, listener)
            listener.stop_listening()
        self.check_half_open_at = (min(now + HALF_OPEN_CHECK_SECONDS, self.patience_until)
                                   if keep else INFINITY)
        return keep

    def take_queue(self, listener, backlog, now):
        """Park what the kernel has queued on ``listener`` (at most ``backlog``)."""
        for _ in range(backlog):
            try:
                sock, addr = listener.sock.accept()
            except OSError:   # BlockingIOError: the queue is empty
                return
            self.park(sock, addr, b"", now, HEAD_INCOMPLETE)

    def stop(self, graceful, stop_deadline):
        """On a graceful stop, a complete parked request stays parked and
        check forks it when a slot is free (never past --max-children), or
        answers 503 if none frees up before the stop deadline (or its
        --header-timeout from the accept, as when not stopping); an incomplete
        one has STOP_HEAD_GRACE_SECONDS more to complete (a proxy that has just
        connected is sending it), then 503.  An idle handed-back connection
        gets the same grace: a request on it is served (and the connection
        closed after it), a quiet one is closed.  A proxy that picks this
        server meanwhile uses up its pooled connections, or meets the closed
        listener and marks the server failed; either way it stops picking the
        idle ones before they close, so none is closed under a request it was
        sending.  A connection parked later (park) gets the same deadlines.
        On a fast stop every parked connection gets 503."""
        self.stopping, self.stop_deadline = True, stop_deadline
        if not graceful:
            self.refuse_all()
            return
        now = time.monotonic()
        for parked in self.parked.values():
            self.hurry(parked, now)
        self.check()

    def hurry(self, parked, now):
        """A graceful stop's deadline for a parked connection: a complete
        request waits for a child as it would have (--header-timeout from its
        accept), but not past the stop deadline; so does a small body that is
        coming; a head still coming gets STOP_HEAD_GRACE_SECONDS."""
        if parked.state == READY:
            parked.deadline = min(parked.accepted_at + self.opts.header_timeout,
                                  self.stop_deadline)
        elif parked.head_end:   # the head is in, a small body is coming
            parked.deadline = min(parked.deadline, self.stop_deadline)
        else:
            parked.deadline = min(parked.deadline, now + STOP_HEAD_GRACE_SECONDS)

    def refuse_all(self):
        for fd in list(self.parked):
            parked = self.unpark(fd)
            if parked.idle:
                parked.sock.close()
            else:
                refuse(parked.sock, 503)


def max_pending_room(requested, log):
    """--max-pending, bounded: each parked connection is a descriptor of the
    parent's, and RESERVED_FDS stay for listeners, logs, the app's own files
    and the socket of the connection being forked; under a low limit, half
    of it (the parent itself needs about ten: at ulimit -n 64, 64 reserved
    left one parked connection, and every second slow head got 503)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = INFINITY if soft == resource.RLIM_INFINITY else max(
        soft - min(RESERVED_FDS, soft // 2), 1)
    if requested is None:   # the default: as many as fit, silently
        return min(DEFAULT_MAX_PENDING, room)
    if requested > room:
        log.warning("--max-pending %d is more than RLIMIT_NOFILE (%d) leaves room for; "
                    "holding at most %d (raise it with ulimit -n or LimitNOFILE=)"
                    % (requested, soft, room))
        return room
    return requested


def request_state(data, limit, bodies=True, limits=None, since=0):
    """A connection goes to a child once it is READY: its head is complete (or
    can never be: too long, a line over its limit in ``limits``, or a bare
    CR/LF the child answers 400), and so is its body if that is small
    (filter_body_bytes) and the filter waits for bodies (not with
    --min-body-rate 0: no rate to hold them to)."""
    if len(data) > limit + PARENT_BODY_BYTES:
        return READY
    try:
        end = find_head_end(data)
        if end == -1 and limits is not None:   # since: the length at the last look
            check_partial_head(data, limits, since)
    except HTTPError:
        return READY
    if end == -1:
        return READY if len(data) > limit else HEAD_INCOMPLETE
    if not bodies or len(data) - end >= filter_body_bytes(data, end):
        return READY
    return BODY_INCOMPLETE


def filter_body_bytes(data, end):
    """How much body the filter waits for after the head ending at end: its
    Content-Length if that is at most PARENT_BODY_BYTES, else 0.  Only a
    plain, single, small Content-Length: the child alone parses the request
    (a repeated or bad one is its 400), answers Expect: 100-continue (the
    client sends nothing before it) and reads chunked bodies."""
    head = data[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    if at == -1 or head.find(b"\r\ncontent-length:", at + 1) != -1 or (
            b"\r\nexpect:" in head or b"\r\ntransfer-encoding:" in head):
        return 0
    value = bytes(head[at + 17:head.find(b"\r\n", at + 17)].strip(b" \t"))
    # bytes.isdigit() is ASCII only (str.isdigit() would take "١٢").
    if not value.isdigit() or int(value) > PARENT_BODY_BYTES:
        return 0
    return int(value)


def refuse_late(log, parked, now, stopping):
    """A held request past its deadline: 503 if it was complete but no child
    was free, else 408 (503 while stopping: do not come back)."""
    if parked.state == READY:
        log.limited("no free child", "warning", "client %s: no free child in %.0fs; 503"
                    % (format_addr(parked.addr), now - parked.accepted_at))
        refuse(parked.sock, 503)
        return
    status = 503 if stopping else 408
    log.limited("no complete request", "info", "client %s: no complete request %s in %.0fs; %d"
                % (format_addr(parked.addr), "body" if parked.head_end else "head",
                   now - parked.accepted_at, status))
    refuse(parked.sock, status)


def out_of_memory(log, held, sock, addr):
    """A MemoryError holding a connection's bytes in the parent (RLIMIT_AS, a
    full machine): that connection gets 503, and the parent goes on."""
    log.limited("out of memory", "warning",
                "out of memory holding %d connections in the parent: answering %s with 503 "
                "(lower --max-pending to hold less)" % (held, format_addr(addr)))
    refuse(sock, 503)


def warn_half_open(log, count, listener):
    log.warning("stopping: %d connection%s to %s still half open (no request yet); closing "
                "the listener resets %s" % (count, "" if count == 1 else "s",
                                            listener.description, "it" if count == 1 else "them"))


def close_if_quiet(sock):
    """Close an idle connection unless the client has begun a request on it
    (closing over unread bytes resets the connection and loses the request).
    True if it was closed."""
    try:
        if sock.recv(1, socket.MSG_PEEK | MSG_DONTWAIT):
            return False
    except OSError:
        pass   # BlockingIOError: quiet; a reset: nothing to lose
    sock.close()
    return True


def refuse(sock, status):
    """Answer from the parent without blocking (503, 408), then close.

    First it reads what the client has already sent (a body behind a complete
    head, up to REFUSE_DRAIN_BYTES): close() with unread data sends a reset
    instead of a FIN, and a reset can cost the client the answer in flight.
    What is still on its way is not waited for: the parent never blocks."""
    try:
        sock.send(error_response(status), MSG_DONTWAIT)
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < REFUSE_DRAIN_BYTES:
            chunk = sock.recv(65536, MSG_DONTWAIT)
            if not chunk:
                break
            drained += len(chunk)
    except (OSError, MemoryError):
        pass   # BlockingIOError: all that has arrived is read
    sock.close()
