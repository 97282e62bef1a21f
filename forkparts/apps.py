"""App loading: the app spec, the import, the reload, and the user's traceback.

DESIGN note: everything that turns an app spec (gunicorn's forms, parsed
with ``ast``, never evaluated) into the WSGI callable and tells the user's
code from ours lives here, with what the app's import needs first (--env,
--chdir, --pythonpath): the parent imports the app once, before the first
fork, and again on SIGHUP (AppLoader.reload).  It is
a room of its own because it is the one place that runs the user's import,
and the one place that knows which files are the server's own (OUR_FILES,
also used by --prewarm to show the user's traceback without our frames).

What a reload imports again, and --reload watches, is the app's own code
only (AppLoader.user_modules): a module imported from a source file after
the app's import began, unless its file is a library's (under the Python
installation, under a site-packages or dist-packages directory, the user
site included, or named by an installer's RECORD in its sys.path directory:
pip install --target, a --pythonpath of installed packages), or its
top-level package has a compiled extension module loaded (numpy refuses a
second import in one process).  Re-importing a library is at best a waste
(Flask's 104 modules at every HUP) and at worst a failed reload.
"""

import os
import re
import sys
import time

from forkparts.cli import UsageError

RELOAD_POLL_SECONDS = 1.0                # --reload: how often source mtimes are checked
LOGGING_TRIAL_SECONDS = 5.0              # a --paste reload's new logging sections, tried
# Where site.py and Debian put installed libraries; the user site
# (site.getusersitepackages(), ~/.local/lib/pythonX.Y/site-packages) is one.
LIBRARY_DIR_NAMES = frozenset(("site-packages", "dist-packages"))

# The server's own source files: the two front doors beside this package, and
# the package's modules.  Real paths: compare them with os.path.realpath().
PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
FRONT_DOORS = ("forkserver.py", "wsgi_handler.py")
OUR_FILES = frozenset(
    [os.path.join(os.path.dirname(PACKAGE_DIR), name) for name in FRONT_DOORS]
    + [os.path.join(PACKAGE_DIR, name) for name in os.listdir(PACKAGE_DIR)
       if name.endswith(".py")])


def is_our_file(filename):
    """Is ``filename`` (a code object's co_filename) one of the server's own?"""
    return os.path.realpath(filename) in OUR_FILES


class AppLoadError(Exception):
    """The app spec could not be turned into a callable: exit status 3."""


def compiled_packages():
    """The top-level names of the packages that have a compiled extension
    module loaded (numpy, markupsafe._speedups): such a module cannot be
    imported again in the same process (numpy: "cannot load module more than
    once per process"), and the package's Python modules hold its objects."""
    import importlib.machinery
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return {name.partition(".")[0] for name, module in list(sys.modules.items())
            if str(getattr(module, "__file__", None)).endswith(suffixes)}


def recorded_files(directory):
    """The files named by the RECORD of every ``*.dist-info`` in ``directory``
    (PEP 376: one CSV row per installed file, its path relative to the
    directory), normalised as installed() compares them."""
    try:
        import csv
        import glob
    except ImportError:   # --user that cannot read the installation (a warning said so)
        return frozenset()
    files = set()
    for record in glob.glob(os.path.join(glob.escape(directory), "*.dist-info", "RECORD")):
        try:
            with open(record, newline="", encoding="utf-8") as f:
                files.update(os.path.normpath(os.path.join(directory, row[0]))
                             for row in csv.reader(f) if row)
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
    return frozenset(files)


class AppLoader:
    """Resolves ``MODULE``, ``MODULE:NAME`` or ``MODULE:factory(literals)``,
    and re-imports it."""

    def __init__(self, spec, app_dir=None):
        self.spec = spec
        self.parse(spec)
        self.app_dir = app_dir   # entered again at each reload (setup_paths)
        self.baseline = set(sys.modules)
        self.prefixes = tuple({os.path.realpath(p) + os.sep for p in
                               (sys.prefix, sys.base_prefix, sys.exec_prefix)})
        self.verdicts = {}   # file -> is_library(file)
        self.records = {}    # sys.path directory -> the files its RECORDs name

    def parse(self, spec):
        self.module_name, self.attr, self.factory = parse_app_spec(spec)

    def load(self):
        import importlib
        try:
            module = importlib.import_module(self.module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (self.module_name + ".").startswith(exc.name + "."):
                paste = (" (a PasteDeploy file? --paste %s)" % self.spec
                         if self.spec.endswith(".ini") and os.path.isfile(self.spec) else "")
                raise AppLoadError("no module named %r (sys.path: %s)%s" % (
                    exc.name, ", ".join(sys.path[:4]), paste)) from None
            raise AppLoadError(user_traceback("importing %r failed" % self.module_name)) from None
        except (Exception, SystemExit):   # the app's error; a stop signal goes through
            raise AppLoadError(user_traceback("importing %r failed" % self.module_name)) from None
        return self.resolve(module)

    def resolve(self, module):
        obj = module
        for part in self.attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise AppLoadError("module %r has no attribute %r%s" % (
                    self.module_name, self.attr, self.hint(module))) from None
        if self.factory is not None:
            args, kwargs = self.factory
            try:
                obj = obj(*args, **kwargs)
            except (Exception, SystemExit):
                raise AppLoadError(user_traceback("calling %s() failed" % self.attr)) from None
        if not callable(obj):
            raise AppLoadError("%s is not callable (it is a %s)" % (self.spec, type(obj).__name__))
        refuse_asgi(obj, self.spec, self.module_name)
        return obj

    def hint(self, module):
        """A bare ``module`` means ``module:application``, as in gunicorn
        (util.import_app); name the usual other spelling if it is there."""
        if self.attr == "application" and ":" not in self.spec and hasattr(module, "app"):
            return " (a bare module means %s:application; did you mean %s:app?)" % (
                self.module_name, self.module_name)
        return ""

    def user_modules(self):
        """The app's own modules, the ones a reload imports again: those
        imported since the app's import began (not in the baseline), from a
        source file, that are no library's (is_library) and whose top-level
        package has no compiled extension module loaded (compiled_packages)."""
        compiled = compiled_packages()
        found = {}
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if (path and isinstance(path, str) and name not in self.baseline
                    and name != "__main__"
                    and name.partition(".")[0] not in compiled
                    and not self.is_library(path)):
                found[name] = module
        return found

    def is_library(self, path):
        """Is the file ``path`` a library's?  Remembered per file until the
        next reload (the watcher asks every second)."""
        verdict = self.verdicts.get(path)
        if verdict is None:
            real = os.path.realpath(path)
            verdict = self.verdicts[path] = (
                real.startswith(self.prefixes)
                or not LIBRARY_DIR_NAMES.isdisjoint(real.split(os.sep))
                or self.installed(path))
        return verdict

    def installed(self, path):
        """Is ``path`` listed in the RECORD of a distribution installed in a
        sys.path directory (PEP 376, PEP 627): what pip writes, also for
        ``pip install --target DIR`` and for a --pythonpath or PYTHONPATH
        directory holding such installs?"""
        path = os.path.normpath(os.path.abspath(path))
        for entry in sys.path:
            directory = os.path.normpath(os.path.abspath(entry or os.curdir))
            if path.startswith(directory + os.sep):
                if directory not in self.records:
                    self.records[directory] = recorded_files(directory)
                if path in self.records[directory]:
                    return True
        return False

    def reload(self):
        """Import the app afresh; on any failure put the old modules back."""
        import importlib
        if self.app_dir:
            enter_app_dir(self.app_dir)   # a switched symlink: the new release
        self.verdicts, self.records = {}, {}   # a library may have been installed since
        saved = self.user_modules()
        self.reimported = sorted(saved)   # none: the app is a library's (log_reloaded)
        for name in saved:
            del sys.modules[name]
        importlib.invalidate_caches()
        try:
            return self.load()
        except AppLoadError:
            for name in self.user_modules():
                del sys.modules[name]
            sys.modules.update(saved)
            raise

    def reopen_log_files(self, log):
        """USR1: nothing here; PasteLoader's file may have set up log files."""

    def watched_files(self):
        """What --reload watches: the app's own modules' files."""
        return [module.__file__ for module in self.user_modules().values()]

    def source_mtimes(self):
        mtimes = {}
        for path in self.watched_files():
            try:
                mtimes[path] = os.stat(path).st_mtime_ns
            except OSError:
                pass
        return mtimes


class PasteLoader(AppLoader):
    """--paste INI[#NAME]: the ``[app:NAME]`` section (``main`` by default)
    of a PasteDeploy file, such as a Pyramid project's production.ini, loaded
    as gunicorn's --paste loads it (paste.deploy.loadapp, with --paste-global's
    KEY=VALUE pairs as its global_conf).  If the file has a ``[loggers]``
    section, the logging module is set up from it first, as gunicorn and
    pserve do (``%(here)s`` is the file's directory), so the app's own log
    lines go where the file says.  A reload reads the file again; --reload
    watches it beside the app's modules.  PasteDeploy is imported only here:
    the server itself needs nothing outside the standard library."""

    def __init__(self, uri, global_conf=(), app_dir=None):
        self.global_conf = dict(pair.partition("=")[::2] for pair in global_conf or ())
        self.file_handlers = []   # the logging.FileHandlers the file's [handlers] made
        self.logging = ()   # the logging sections applied (logging_sections)
        super().__init__(uri, app_dir)

    def parse(self, uri):
        path, _, name = uri.partition("#")
        self.path, self.name = path, name or "main"

    def load(self):
        try:
            from paste.deploy import loadapp
        except ImportError:
            raise AppLoadError("--paste needs PasteDeploy, which is not installed "
                               "(pip install PasteDeploy; Pyramid brings it)") from None
        self.setup_logging()
        try:
            app = loadapp("config:" + self.path, name=self.name, relative_to=os.getcwd(),
                          global_conf=self.global_conf)
        except (Exception, SystemExit) as exc:
            raise AppLoadError(self.load_failure(exc)) from None
        if not callable(app):
            raise AppLoadError("the app %r of %s is not callable (it is a %s)"
                               % (self.name, self.path, type(app).__name__))
        refuse_asgi(app, "the app %r of %s" % (self.name, self.path))
        return app

    def load_failure(self, exc):
        """What a failed loadapp says: one line for a mistake in the file,
        the user's traceback for the app's own error."""
        import configparser
        if type(exc) is LookupError:   # PasteDeploy's: no such section or entry point
            return str(exc)
        if isinstance(exc, configparser.Error):   # the file's: %(name)s not defined
            return "%s: %s" % (self.path, one_line(exc))
        if type(exc).__name__ == "PackageNotFoundError":   # use = egg:NAME
            return ("the app %r of %s: %s: is it installed? (for the project itself: pip "
                    "install -e . in its directory)" % (self.name, self.path, exc))
        return user_traceback("loading the app %r of %s failed" % (self.name, self.path))

    def setup_logging(self):
        """The file's logging sections, if it has them, applied with
        fileConfig, which first closes every handler the logging module has.
        So a reload whose sections are unchanged leaves them as they are (a
        --user parent may not open their files again), and one whose sections
        changed tries them first in a throwaway child (logging_failure): only
        if they work there are the parent's handlers replaced."""
        import configparser
        import logging.config
        parser = configparser.ConfigParser(dict(   # --paste-global's too, as pserve's
            self.global_conf, __file__=self.path, here=os.path.dirname(self.path)))
        try:
            parser.read([self.path], encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise AppLoadError("%s: %s" % (self.path, one_line(exc))) from None
        sections = logging_sections(parser)
        if not sections or sections == self.logging:
            return
        failure = logging_failure(parser) if self.logging else ""
        try:
            if not failure:
                logging.config.fileConfig(parser, disable_existing_loggers=False)
        except Exception as exc:   # noqa: BLE001 - the user's file: say what in it is wrong
            failure = describe_logging_error(exc)
        if failure:
            raise AppLoadError("the logging sections of %s: %s" % (self.path, failure))
        self.logging = sections
        self.file_handlers = file_handlers(parser)

    def reopen_log_files(self, log):
        """USR1: the files of the FileHandlers the file set up, opened again
        under their names (logrotate moved them), as gunicorn's USR1 reopens
        its logging's files.  Through setStream, the handler's own way to
        change its stream; children forked from now on write the new file."""
        for handler in self.file_handlers:
            try:
                stream = open(handler.baseFilename, handler.mode, encoding=handler.encoding,
                              errors=getattr(handler, "errors", None))
            except OSError as exc:
                log.warning("USR1: cannot reopen %s for the app's logging: %s"
                            % (handler.baseFilename, exc.strerror))
                continue
            old = handler.setStream(stream)
            if old is not None:
                old.close()

    def watched_files(self):
        return super().watched_files() + [self.path]


CO_COROUTINE = 0x80   # inspect.CO_COROUTINE: the code of an ``async def``


def refuse_asgi(app, what, module=""):
    """An ASGI app (``async def __call__(scope, receive, send)``: Django's
    asgi.py, FastAPI, Starlette, Quart) is not a WSGI one: it would start and
    answer every request with a 500.  Told by the code's flags alone (inspect
    is not imported into the parent for it).  ``module``: the spec's, whose
    WSGI twin (PROJECT.wsgi for PROJECT.asgi) the line names."""
    twin = module[:-len("asgi")] + "wsgi" if module.split(".")[-1] == "asgi" else ""
    for candidate in (app, getattr(type(app), "__call__", None)):
        try:
            code = getattr(candidate, "__code__", None)
        except Exception:   # noqa: BLE001 - an unbound proxy's __getattr__: not ours to fail on
            continue
        if code is not None and code.co_flags & CO_COROUTINE:
            raise AppLoadError(
                "%s is an ASGI app (called as an async def with scope, receive, send), "
                "and forkserver serves WSGI apps (PEP 3333): serve it with an ASGI server, "
                "or name the project's WSGI app (%s)"
                % (what, twin or "Django's is PROJECT.wsgi, not PROJECT.asgi"))


def one_line(exc):
    """A configparser error's message (several lines: the file, the line) on one."""
    return "; ".join(line for line in str(exc).splitlines() if line.strip(" "))


def logging_sections(parser):
    """The logging sections of a PasteDeploy file, as fileConfig reads them
    (values uninterpolated, defaults included), or () if it has none."""
    if not parser.has_section("loggers"):
        return ()
    return tuple((name, tuple(parser.items(name, raw=True))) for name in parser.sections()
                 if name in ("loggers", "handlers", "formatters")
                 or name.startswith(("logger_", "handler_", "formatter_")))


def describe_logging_error(exc):
    if isinstance(exc, KeyError):
        return "a section or key they need is missing: %s" % exc
    return "%s: %s" % (type(exc).__name__, exc)


def logging_failure(parser):
    """Why fileConfig(parser) fails, tried in a throwaway child ("" if it
    works there), so that new logging sections that fail leave the parent's
    handlers as they were: fileConfig closes them all before making any.
    The child is waited for LOGGING_TRIAL_SECONDS at most (a handler's
    constructor may block), then killed and reaped as the warm-up's are."""
    import logging.config
    from forkparts.children import end_child, read_report
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        message = ""
        try:
            os.close(read_end)
            logging.config.fileConfig(parser, disable_existing_loggers=False)
        except BaseException as exc:   # noqa: BLE001 - reported, then _exit
            message = " ".join(describe_logging_error(exc).splitlines())[:4000]
        try:
            os.write(write_end, message.encode("utf-8", "replace") + b"\n")
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        line = read_report(read_end, time.monotonic() + LOGGING_TRIAL_SECONDS)
    finally:
        os.close(read_end)
        end_child(pid)
    if line is None:
        return "trying them took more than %g s" % LOGGING_TRIAL_SECONDS
    return line.decode("utf-8", "replace").rstrip("\n") if line else "trying them failed"


def file_handlers(parser):
    """The logging.FileHandlers of the loggers a PasteDeploy file's
    ``[loggers]`` names (root, and each ``[logger_NAME]``'s qualname)."""
    import logging
    found = []
    for name in parser.get("loggers", "keys", fallback="").split(","):
        name = name.strip(" \t")
        if name:
            qualname = None if name == "root" else parser.get(
                "logger_" + name, "qualname", fallback=name, raw=True)
            found += [h for h in logging.getLogger(qualname).handlers
                      if isinstance(h, logging.FileHandler) and h not in found]
    return found


def app_loader(opts):
    """The loader of the app the options name: MODULE:CALLABLE or --paste."""
    app_dir = getattr(opts, "app_dir", None)   # set by setup_paths
    if opts.paste:
        return PasteLoader(opts.paste, opts.raw_paste_global_conf, app_dir)
    return AppLoader(opts.app, app_dir)


def app_name(opts):
    """The app as the options name it, for messages."""
    return opts.app or "--paste %s" % opts.paste


DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
APP_SPEC_FORMS = ("MODULE (its `application`), MODULE:CALLABLE, MODULE:factory() or "
                  "MODULE:factory('arg', key=1) with literal arguments")


def parse_app_spec(spec):
    """gunicorn's app specs -> (module, attr, factory), factory being None
    or (args, kwargs).  The part after ``:`` is parsed with ``ast``, never
    evaluated: a name (dotted), or a call of one whose arguments are
    literals (ast.literal_eval on each), as gunicorn's util.import_app."""
    module, _, expression = (spec or "").partition(":")
    if not DOTTED_NAME.fullmatch(module) or (
            ":" in (spec or "") and not expression):
        raise AppLoadError("invalid app spec %r: expected %s" % (spec, APP_SPEC_FORMS))
    if not expression:
        return module, "application", None
    if DOTTED_NAME.fullmatch(expression.strip(" \t")):   # the common form: no ast
        return module, expression.strip(" \t"), None      # in the parent's memory
    import ast
    try:
        node = ast.parse(expression.strip(" \t"), mode="eval").body
    except SyntaxError:
        node = None
    call = node if isinstance(node, ast.Call) else None
    name = dotted_name(call.func if call else node)
    if name is None:
        raise AppLoadError("invalid app spec %r: after ':' expected a name or a call "
                           "of one (%s)" % (spec, APP_SPEC_FORMS))
    return module, name, call_arguments(spec, call) if call else None


def dotted_name(node):
    """``name`` or ``name.attr.attr`` of an ast node, or None."""
    import ast
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted_name(node.value)
        return base and base + "." + node.attr
    return None


def call_arguments(spec, call):
    """(args, kwargs) of a factory call, each a literal; anything else (a
    name, a call, *args, **kwargs) is an error naming it."""
    import ast
    try:
        args = [ast.literal_eval(arg) for arg in call.args]
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords
                  if kw.arg is not None}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        args = kwargs = None
    if args is None or any(kw.arg is None for kw in call.keywords):
        raise AppLoadError("invalid app spec %r: factory arguments must be literals "
                           "(strings, numbers, tuples, lists, dicts, True, False, None)"
                           % spec)
    return args, kwargs


def user_traceback(what):
    """The traceback of the user's own code, without our frames."""
    import traceback
    etype, value, tb = sys.exc_info()
    frames = traceback.extract_tb(tb)
    frozen = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
    keep = [f for f in frames if f.filename not in frozen and "importlib" not in f.filename
            and not is_our_file(f.filename)]
    text = "".join(traceback.format_list(keep)) + "".join(
        traceback.format_exception_only(etype, value))
    return "%s:\nTraceback (most recent call last):\n%s" % (what, text.rstrip("\n"))


def apply_env(opts):
    """-e/--env KEY=VALUE and raw_env: into os.environ before the app is
    imported, as gunicorn does, so children inherit them."""
    for pair in opts.raw_env or ():
        key, _, value = pair.partition("=")
        os.environ[key] = value


def script_name():
    """The prefix the app is mounted under: $SCRIPT_NAME (-e SCRIPT_NAME=/app
    sets it too), as gunicorn takes it; "" without it."""
    value = os.environ.get("SCRIPT_NAME", "")
    if value and not value.startswith("/") or "%" in value or "?" in value:
        raise UsageError("SCRIPT_NAME %r: a path starting with /, without %% or ?, "
                         "e.g. -e SCRIPT_NAME=/app" % value)
    return value.rstrip("/")


def logical_cwd():
    """The current directory as the shell named it: $PWD when that is this
    directory, so a symlink on the way (releases/current) is kept by name,
    as gunicorn keeps it; else getcwd(), with every symlink resolved."""
    cwd = os.getcwd()
    pwd = os.environ.get("PWD", "")
    if pwd != cwd and os.path.isabs(pwd):
        try:
            here, named = os.stat(cwd), os.stat(pwd)
            if (here.st_dev, here.st_ino) == (named.st_dev, named.st_ino):
                return pwd
        except OSError:
            pass
    return cwd


def enter_app_dir(path):
    """A reload's chdir into the app's directory, by its name again."""
    try:
        os.chdir(path)
    except OSError as exc:
        raise AppLoadError("cannot enter the app's directory %s: %s"
                           % (path, exc.strerror)) from None


def setup_paths(opts):
    """--chdir, then the app's directory and --pythonpath on sys.path, as
    gunicorn does.  The directory is kept by the name it was given
    (opts.app_dir): a reload enters it again, so a deploy that switches a
    symlink (current -> releases/N) and sends SIGHUP serves the new release."""
    opts.app_dir = logical_cwd()
    if opts.chdir:
        opts.app_dir = os.path.normpath(os.path.join(opts.app_dir, opts.chdir))
        try:
            os.chdir(opts.app_dir)
        except OSError as exc:
            raise UsageError("--chdir %r: %s" % (opts.chdir, exc.strerror)) from None
    if opts.app_dir not in sys.path:
        sys.path.insert(0, opts.app_dir)
    for entry in reversed((opts.pythonpath or "").split(",")):
        if entry:   # relative to the app's directory, by its name too
            sys.path.insert(0, os.path.normpath(os.path.join(opts.app_dir, entry)))


class SourceWatcher:
    """--reload: the mtimes of the app's source files, looked at once per
    RELOAD_POLL_SECONDS from the parent's loop (no thread: the parent is
    single-threaded, and fork() copies only the calling thread).  The files
    are listed afresh at each look, as gunicorn's reloader lists sys.modules:
    a module first imported after start (by the warm-up's request, as
    Django's urls and views, or a view's own ``import``) is watched from the
    look that first finds it, at the mtime it has then.  A file once seen
    stays watched, so an editor that deletes and rewrites is not missed."""

    def __init__(self, loader):
        self.loader = loader
        self.mtimes = loader.source_mtimes()
        self.next_check = time.monotonic() + RELOAD_POLL_SECONDS
        self.changed_name = None   # the first file found changed

    def changed(self):
        now = time.monotonic()
        if now < self.next_check:
            return False
        self.next_check = now + RELOAD_POLL_SECONDS
        mtimes = self.loader.source_mtimes()
        changed = [path for path, m in mtimes.items() if self.mtimes.get(path, m) != m]
        self.mtimes.update(mtimes)
        if changed:
            self.changed_name = os.path.basename(changed[0])
        return bool(changed)

    def rescan(self):
        """After the warm-up and after a reload: the files of the app as it
        is now, the new ones at their mtime now."""
        self.mtimes.update(self.loader.source_mtimes())


def warn_about_app(log, app):
    """What the loaded app keeps that one process per connection cannot
    honour, said once at start: threads, werkzeug's debugger console."""
    warn_about_threads(log)
    if debugger_console(app):
        log.warning("the app is wrapped in werkzeug's DebuggedApplication with evalex=True: "
                    "its console keeps the traceback's frames in the process that raised, "
                    "and each connection here has a process of its own, so the console's "
                    "commands answer 404 or the error page again; debug with one process "
                    "(flask run --debug), or pass evalex=False to keep the traceback pages")


def debugger_console(app):
    """True if ``app``, or the ``wsgi_app`` it calls (Flask's), is werkzeug's
    DebuggedApplication with its console on.  Read only, never changed."""
    try:
        for obj in (app, getattr(app, "wsgi_app", None)):
            if (any(cls.__name__ == "DebuggedApplication" and cls.__module__ == "werkzeug.debug"
                    for cls in type(obj).__mro__) and getattr(obj, "evalex", False) is True):
                return True
    except Exception:   # noqa: BLE001 - an app's odd __getattr__ is not our error
        pass
    return False


def warn_about_threads(log):
    """fork() copies only the calling thread: a thread the app's import
    started is gone in every child, and a lock it held stays locked there."""
    threading = sys.modules.get("threading")
    if threading is None or threading.active_count() <= 1:
        return
    names = ", ".join(t.name for t in threading.enumerate()
                      if t is not threading.main_thread())
    log.warning("importing the app started threads (%s): fork() copies "
                "only the main thread, so a lock they hold can deadlock a child" % names)
