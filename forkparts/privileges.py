"""Privileges: bind as root, write the pidfile, then become --user/--group.

DESIGN note: the order matters and is kept in one place (open_listeners):
bind (a low port needs root), write the pidfile where root may and give it
to the user who must remove it, drop privileges, then check that the user
can write the status file.  Files the server writes are written atomically
(write_atomically: new file, O_EXCL|O_NOFOLLOW, rename), so readers never
see half of one and a planted symlink is never followed.  start_problems
walks the same order for --check-config, finding what would fail without
binding, writing or switching user.  A room of its own
because it is the security-sensitive start-up, read and reviewed as a whole.
"""

import errno
import os
import stat
import sys

from forkparts.apps import logical_cwd
from forkparts.cli import DEFAULT_BIND, UsageError, check_binds
from forkparts.listeners import (ASCII_DIGITS_RE, ListenError, check_address, open_listener,
                                 systemd_listeners)
from forkparts.upgrade import LAUNCH_DIR


def open_listeners(opts, inherited=None):
    """``inherited``: the sockets of a SIGUSR2 upgrade (forkparts.upgrade),
    taken for the --bind addresses they match instead of binding again."""
    check_binds(opts.bind or ())
    listeners = systemd_listeners(opts.backlog)
    try:
        if not listeners or opts.bind:
            for address in opts.bind or [DEFAULT_BIND]:
                listeners.append((inherited and inherited.take(address)) or open_listener(
                    address, opts.backlog, opts.umask, opts.header_timeout))
        if inherited:
            inherited.close_unused()
        owner = resolve_owner(opts.user or str(os.getuid()), opts.group) if (
            opts.user or opts.group) else None
        # The pidfile is written while we may still write where root can, and
        # given to --user, so that a later run as that user can replace it.
        if opts.pidfile:
            # Given to the user only where that user may also remove it at exit:
            # a user-owned pidfile in root's directory would outlive us, and
            # root's scripts would signal whatever pid the app wrote there.
            write_pidfile(opts.pidfile, owner if owner and writable_by(
                os.path.dirname(os.path.abspath(opts.pidfile)), *owner) else None)
        if owner:
            drop_privileges(owner, listeners)
        if opts.status_file:
            check_status_dir(opts.status_file)
    except BaseException:   # ListenError, UsageError, a stop signal (StopBeforeReady)
        if inherited:
            inherited.close_unused()
        for listener in listeners:
            listener.close()    # a unix socket file bound before the failure goes too
        if opts.pidfile:
            remove_pidfile(opts.pidfile)
        raise
    for listener in listeners:
        listener.sock.setblocking(False)
    return listeners


def resolve_owner(user, group):
    """(uid, gid) of --user/--group (the user's own group by default)."""
    import grp
    import pwd
    try:
        pw = pwd.getpwuid(int(user)) if ASCII_DIGITS_RE.fullmatch(user) else pwd.getpwnam(user)
    except (KeyError, OverflowError, ValueError):
        raise ListenError("no such user: %r" % user) from None
    gid = pw.pw_gid
    if group:
        try:
            gid = (grp.getgrgid(int(group)).gr_gid if ASCII_DIGITS_RE.fullmatch(group)
                   else grp.getgrnam(group).gr_gid)
        except (KeyError, OverflowError, ValueError):
            raise ListenError("no such group: %r" % group) from None
    return pw.pw_uid, gid


def drop_privileges(owner, listeners):
    """Bind first (as root), then become the (uid, gid) owner before accepting."""
    uid, gid = owner
    for listener in listeners:
        if listener.unix_path:
            os.chown(listener.unix_path, uid, socket_group(listener.unix_path, gid))
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) == (uid, uid, gid, gid):
        return   # already that user: a parent executed by SIGUSR2 after dropping them
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except PermissionError:
        raise ListenError("cannot switch to user %d: not running as root" % uid) from None


def socket_group(path, gid):
    """The group a unix socket file is given at the drop: gid, unless the file
    lies in a set-group-ID directory.  There every new file takes the
    directory's group (open(2), the BSD rule), which is how an administrator
    says who may connect (www-data for nginx: docs/deploy.md,
    deploy/forkserver-tmpfiles.conf): -1 keeps it."""
    directory = os.path.dirname(os.path.abspath(path))
    return -1 if os.stat(directory).st_mode & stat.S_ISGID else gid


def write_pidfile(path, owner=None):
    """Any failure is one line naming the file, the cause and the remedy
    (a UsageError: exit 2), with no temporary file left behind.  A pidfile
    that names another live process is not replaced (gunicorn's "Already
    running on PID"): two servers on one pidfile would leave the first one
    unreachable by every script that signals it, and the second's exit would
    remove the first one's file."""
    check_pidfile_free(path)
    if names_us(path):
        return   # a HUP executed this process (forkparts/reexec.py): as root may have left it
    try:
        write_atomically(path, "%d\n" % os.getpid(), owner)
    except OSError as exc:
        raise UsageError("cannot write --pidfile %r: %s" % (
            path, pidfile_problem(path, exc))) from None


def check_pidfile_free(path):
    running = live_pid_in(path)
    if running:
        raise UsageError(
            "--pidfile %r names process %d, which is running: another server uses this "
            "pidfile (stop it, or give this one another --pidfile); if process %d is not "
            "a server, the file is stale: remove it" % (path, running, running))


def names_us(path):
    try:
        with open(path) as f:
            return f.read() == "%d\n" % os.getpid()
    except OSError:
        return False


def live_pid_in(path):
    """The pid a pidfile names, if that process is alive and is not us; else None."""
    try:
        with open(path) as f:
            pid = int(f.read().strip(" \n"))
    except (OSError, ValueError):
        return None   # no file, or not a pidfile of ours: written over as before
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None   # stale: its server died without removing it (SIGKILL)
    except PermissionError:
        pass          # alive, another user's
    return pid


def pidfile_problem(path, exc):
    """Why writing the pidfile failed, and what to do, in words."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        old, folder = os.lstat(path), os.stat(directory)
    except OSError:
        old = folder = None
    uid = os.geteuid()
    if (exc.errno in (errno.EPERM, errno.EACCES) and old is not None and old.st_uid != uid
            and folder.st_mode & stat.S_ISVTX and os.access(directory, os.W_OK)):
        return ("%s: it belongs to %s, and in the sticky directory %r only its owner may "
                "replace it (a server killed with SIGKILL leaves its pidfile behind); "
                "remove it as that user, or choose another --pidfile (one per user)"
                % (exc.strerror, user_name(old.st_uid), directory))
    if exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
        return ("%s: the directory %r is not writable by %s; choose a --pidfile in one "
                "that is" % (exc.strerror, directory, user_name(uid)))
    return exc.strerror or str(exc)


def user_name(uid):
    import pwd
    try:
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return "uid %d" % uid


def warn_after_dropping(opts, log, listeners=()):
    """After privileges are dropped: what the user we run as cannot do."""
    warn_if_pidfile_stays(opts.pidfile, log)
    for listener in listeners:
        warn_if_socket_file_stays(listener.unix_path, log)
    warn_if_log_files_unwritable(opts, log)
    warn_if_launch_dir_closed(log)
    if opts.chdir:   # entered again, and imported from, by USR2 and a HUP's new code
        warn_if_launch_dir_closed(log, opts.app_dir, "--chdir %s" % opts.app_dir)
    warn_if_installation_unreadable(log)


def warn_if_launch_dir_closed(log, directory=LAUNCH_DIR, name=None):
    """SIGUSR2's new parent and a HUP's trial start in the directory the
    server was started in (a relative forkserver.py is found from there), and
    enter --chdir's: a --user that cannot enter one fails both; one that
    cannot read it, too, if modules are imported from it (-m forkserver, the
    app's directory: it is on sys.path)."""
    if not directory:
        return
    imports_from_it = any(os.path.isabs(path) and os.path.realpath(path)
                          == os.path.realpath(directory) for path in sys.path)
    if not os.access(directory, os.X_OK | (os.R_OK if imports_from_it else 0)):
        must = "read and enter" if imports_from_it else "enter"
        log.warning("uid %d cannot %s %s, where SIGUSR2 and a SIGHUP that reloads in a "
                    "fresh interpreter start the new code: both will fail; give that user a "
                    "directory it may %s" % (
                        os.geteuid(), must.replace("and", "or"),
                        name or "%s, the directory the server was started in" % directory,
                        must))


def warn_if_log_files_unwritable(opts, log):
    """A log file root opened (made) before --user: the open descriptor
    serves on, but the user cannot open the file again, so a SIGUSR1 reopen
    and a warmed server's SIGHUP (whose trial and new code open it afresh,
    forkparts/reexec.py) fail, each with a line, long after the start."""
    for option, path, error in log_open_problems(opts):
        log.warning("%s %r: uid %d cannot open it (%s), so SIGUSR1 cannot reopen it, and "
                    "SIGUSR2 and a SIGHUP that reloads in a fresh interpreter fail; give that "
                    "user the file (chown) or a directory it may write" % (
                        option, path, os.geteuid(), os.strerror(error)))


def warn_if_socket_file_stays(path, log):
    """Say so if we cannot remove our unix socket file at exit (root made it,
    in a directory only root may write)."""
    if path and not writable_by(os.path.dirname(os.path.abspath(path)),
                                os.geteuid(), os.getegid()):
        log.warning("--bind unix:%s: its directory is not writable by uid %d, so the socket "
                    "file will stay after the server stops (the next start replaces it; give "
                    "it a directory of its own, e.g. systemd's RuntimeDirectory=)"
                    % (path, os.geteuid()))


def warn_if_installation_unreadable(log, stdlib=os.path.dirname(os.__file__)):
    """--user that cannot read the interpreter's own library (a Python built
    under /root, mode 0700): every module first imported from now on fails,
    in the parent and in every child, so a request that needs one answers 500."""
    if not os.access(stdlib, os.R_OK | os.X_OK):
        log.warning("uid %d cannot read the Python installation (%s): any module first "
                    "imported from now on (by the app during a request, or lazily by the "
                    "standard library, e.g. encodings.idna) fails and its request answers "
                    "500; install Python where this user can read it (not under /root), or "
                    "import what the app needs when it loads" % (os.geteuid(), stdlib))


def warn_if_pidfile_stays(path, log):
    """Say so if we cannot remove our pidfile at exit."""
    if path and not writable_by(os.path.dirname(os.path.abspath(path)),
                                os.geteuid(), os.getegid()):
        log.warning("--pidfile %r: its directory is not writable by uid %d, so the pidfile "
                    "will stay after the server stops (give it a directory of its own, e.g. "
                    "systemd's RuntimeDirectory=)" % (path, os.geteuid()))


def writable_by(directory, uid, gid):
    """Can uid:gid create and remove files in directory (mode bits only)?"""
    try:
        st = os.stat(directory)
    except OSError:
        return False
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & 0o300 == 0o300)
    if st.st_gid == gid:
        return bool(st.st_mode & 0o030 == 0o030)
    return bool(st.st_mode & 0o003 == 0o003)


def check_status_dir(path, owner=None):
    """--status-file is rewritten (a new file renamed over it) as the user
    the server runs as: its directory must exist and be writable by us, or
    by ``owner`` (uid, gid), the --user that --check-config does not become."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.stat(directory)
    except FileNotFoundError:
        raise UsageError("--status-file %r: no such directory %r" % (path, directory)) from None
    except OSError as exc:
        raise UsageError("--status-file %r: directory %r: %s (uid %d)"
                         % (path, directory, exc.strerror, os.geteuid())) from None
    if not (writable_by(directory, *owner) if owner else os.access(directory, os.W_OK | os.X_OK)):
        raise UsageError("--status-file %r: directory %r is not writable by uid %d"
                         % (path, directory, owner[0] if owner else os.geteuid()))


def start_problems(opts, server_pid=None):
    """--check-config: what open_listeners would fail on, in its order, found
    without binding, writing or switching user: the exceptions a start would
    raise (a ListenError is exit status 4, a UsageError 2), with its words.
    ``server_pid``: a HUP's trial, for a server that will keep its pidfile."""
    problems = []
    try:
        check_binds(opts.bind or ())
    except UsageError as exc:
        problems.append(exc)
    problems += filter(None, map(check_address, opts.bind or [DEFAULT_BIND]))
    owner = None
    try:
        owner = resolve_owner(opts.user or str(os.getuid()), opts.group) if (
            opts.user or opts.group) else None
        if owner and os.geteuid() != 0 and owner != (os.getuid(), os.getgid()):
            raise ListenError("cannot switch to user %d: not running as root" % owner[0])
    except ListenError as exc:
        problems.append(exc)
    for check, path in ((lambda path: pidfile_check(path, server_pid), opts.pidfile),
                        (lambda path: check_status_dir(path, owner), opts.status_file)):
        try:
            if path:
                check(path)
        except UsageError as exc:
            problems.append(exc)
    return problems


def pidfile_check(path, server_pid=None):
    """What write_pidfile would raise, without writing (nothing, if the file
    names ``server_pid``, which a HUP's exec keeps: write_pidfile)."""
    if server_pid and live_pid_in(path) == server_pid:
        return
    check_pidfile_free(path)
    error = file_write_problem(path)
    if error:
        raise UsageError("cannot write --pidfile %r: %s" % (path, pidfile_problem(
            path, OSError(error, os.strerror(error), path))))


def file_write_problem(path):
    """The errno creating or replacing the file ``path`` would fail with
    (its directory missing or not writable, a directory in its place), or 0."""
    directory = os.path.dirname(os.path.abspath(path))
    missing = directory_problem(directory)
    if missing:
        return missing
    if os.path.isdir(path):
        return errno.EISDIR
    if not os.access(directory, os.W_OK | os.X_OK):
        return errno.EACCES
    uid = os.geteuid()
    try:
        old, folder = os.lstat(path), os.stat(directory)
    except OSError:
        return 0
    if uid != 0 and old.st_uid != uid and folder.st_uid != uid and (
            folder.st_mode & stat.S_ISVTX):
        return errno.EPERM   # rename(2) over another user's file in a sticky directory
    return 0


def absolute_log_paths(opts):
    """Relative log paths name files in the directory the server was started
    in, before --chdir, and stay those files when SIGUSR1 reopens them; that
    directory by the name the shell gave it (logical_cwd: a symlink such as
    releases/current is kept)."""
    here = logical_cwd()
    opts.error_log, opts.access_log = (
        os.path.normpath(os.path.join(here, path)) if path and path != "-" else path
        for path in (opts.error_log, opts.access_log))


def log_file_problems(opts):
    """What forkserver.open_logs would fail on, as its UsageError, without opening."""
    absolute_log_paths(opts)
    return [UsageError("cannot open log file %r: %s" % (path, os.strerror(error)))
            for _, path, error in log_open_problems(opts)]


def log_open_problems(opts):
    """(option, path, errno) of each log file that could not be opened now."""
    for option, path in (("--error-log", opts.error_log), ("--access-log", opts.access_log)):
        error = log_open_problem(path) if path and path != "-" else 0
        if error:
            yield option, path, error


def log_open_problem(path):
    """The errno opening ``path`` to append (creating it) would fail with, or 0."""
    if os.path.isdir(path):
        return errno.EISDIR
    if os.path.exists(path):
        return 0 if os.access(path, os.W_OK) else errno.EACCES
    directory = os.path.dirname(os.path.abspath(path))
    return directory_problem(directory) or (
        0 if os.access(directory, os.W_OK | os.X_OK) else errno.EACCES)


def directory_problem(directory):
    """ENOENT or ENOTDIR if a file cannot be made in ``directory`` for want of
    it, else 0 (the pidfile's and the log files' checks alike)."""
    if os.path.isdir(directory):
        return 0
    return errno.ENOTDIR if os.path.exists(directory) else errno.ENOENT


# O_EXCL|O_NOFOLLOW: a name planted in the directory (a symlink to a file
# we must not touch) is never opened, let alone followed; as mkstemp does.
TEMP_FILE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                   | getattr(os, "O_CLOEXEC", 0))
TEMP_FILE_TRIES = 8


def write_atomically(path, text, owner=None):
    """Readers see the old file or the new one, never half of one (rename(2)).
    The temporary file is new and ours (TEMP_FILE_FLAGS), in the same directory."""
    for _ in range(TEMP_FILE_TRIES):
        tmp = "%s.%d.%s.tmp" % (path, os.getpid(), os.urandom(4).hex())
        try:
            fd = os.open(tmp, TEMP_FILE_FLAGS, 0o644)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, "no free temporary name", path)
    try:
        os.write(fd, text.encode())
        if owner:
            os.fchown(fd, *owner)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)   # replaces a symlink at path itself, never its target
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass   # the first error is the one to report
        raise


def remove_pidfile(path):
    """Remove our pidfile (or --status-file): only if it still names our pid."""
    try:
        with open(path) as f:
            text = f.read().strip(" \n")
        if text != str(os.getpid()) and not text.startswith('{"pid": %d,' % os.getpid()):
            return   # another server owns it now
        os.unlink(path)
    except OSError:
        pass
