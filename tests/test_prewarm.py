"""--prewarm: the app's first request runs in the parent, and the code
objects that request runs are copied side by side (relocate_code), so each
child copies fewer pages of them (docs/performance.md)."""
import sys
import time

import forkserver
from tests.conftest import http_get

LOG_WAIT_SECONDS = 10.0

SOURCE = '''
SCALE = 3

def total(values):
    # A generator expression: nested code on every version (a list
    # comprehension is inlined into its function since 3.12, PEP 709).
    return sum(v * SCALE for v in values)

def make_adder(n):
    def add(x):                                 # a closure, made at run time
        return x + n
    return add

def handle(values):
    return total(values), make_adder(10)(len(values))

def never_called():
    return "cold"
'''


def module(source=SOURCE, filename="<relocate-test>"):
    namespace = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def test_code_run_by_lists_what_ran_in_first_run_order():
    ns = module()
    codes = forkserver.code_run_by(ns["handle"], [1, 2])
    names = [code.co_name for code in codes]
    assert names == ["handle", "total", "<genexpr>", "make_adder", "add"]


def test_code_run_by_puts_back_a_profiler_that_was_set():
    seen = []

    def profiler(frame, event, arg):
        seen.append(event)
    sys.setprofile(profiler)
    try:
        forkserver.code_run_by(module()["handle"], [1])
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(None)


def test_relocated_functions_get_equal_fresh_code_and_answer_the_same():
    ns = module()
    before = {name: ns[name].__code__ for name in ("handle", "total", "make_adder", "never_called")}
    expected = ns["handle"]([1, 2, 3])
    hot = forkserver.code_run_by(ns["handle"], [1, 2])
    assert forkserver.relocate_code(hot) >= 3       # handle, total, make_adder (+ any add)
    for name in ("handle", "total", "make_adder"):
        code = ns[name].__code__
        assert code is not before[name], name
        assert (code.co_code, code.co_names, code.co_varnames) == (
            before[name].co_code, before[name].co_names, before[name].co_varnames)
    assert ns["never_called"].__code__ is before["never_called"]   # not run: left alone
    assert ns["handle"]([1, 2, 3]) == expected == (18, 13)


def test_nested_code_is_copied_into_its_parents_constants():
    ns = module()
    hot = forkserver.code_run_by(ns["handle"], [1])
    old_genexpr = next(c for c in hot if c.co_name == "<genexpr>")
    old_add = next(c for c in hot if c.co_name == "add")
    forkserver.relocate_code(hot)
    nested = [c for c in ns["total"].__code__.co_consts if getattr(c, "co_name", "") == "<genexpr>"]
    assert len(nested) == 1 and nested[0] is not old_genexpr     # compared by identity:
    assert nested[0] == old_genexpr                               # code compares by content
    new_add = ns["make_adder"](1).__code__      # a closure made after relocation
    assert new_add is not old_add and new_add == old_add


def test_equal_code_in_another_file_is_not_taken_for_the_hot_one():
    hot_ns, cold_ns = module(), module(SOURCE, "<another-file>")
    assert cold_ns["total"].__code__ == hot_ns["total"].__code__   # equal content
    cold = cold_ns["total"].__code__
    forkserver.relocate_code(forkserver.code_run_by(hot_ns["handle"], [1]))
    assert cold_ns["total"].__code__ is cold
    assert hot_ns["total"].__code__.co_filename == "<relocate-test>"


def test_a_prewarmed_server_answers_and_logs_its_prewarm(start_server):
    server = start_server("tests.apps:echo_environ", "--prewarm", "/warm?x=1",
                          "--log-level", "debug")
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while "moved together" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log_text()
    assert "code objects moved together" in log, log
    assert "prewarm GET /warm?x=1: HTTP/1.1 200 OK" in log
    status, _, body = http_get(server, "/after?y=2")
    assert status == 200
    assert "PATH_INFO='/after'" in body.decode() and "QUERY_STRING='y=2'" in body.decode()


HOLDERS_SOURCE = '''
def helper(x):
    return x * 2

def decorated(fn):
    def wrapper(x):
        return fn(x) + 1            # fn sits in a closure cell
    wrapper.__wrapped__ = fn        # and in the wrapper's attribute dict
    return wrapper

@decorated
def view(x):
    return helper(x)

REGISTRY = {"view": view, "helper": helper}
HANDLERS = [helper, view]

class Resource:
    def get(self, x):
        return helper(x) + 100

def handle(x):
    return view(x), Resource().get(x), REGISTRY["helper"](x), HANDLERS[0](x)
'''


def test_moved_functions_are_the_same_object_everywhere_and_answer_the_same():
    ns = module(HOLDERS_SOURCE, "<holders-test>")
    # By id: a dict holding the old functions would be repointed too.
    old = {"helper": id(ns["helper"]), "get": id(ns["Resource"].__dict__["get"]),
           "view": id(ns["view"]), "inner": id(ns["view"].__wrapped__)}
    helper_code = ns["helper"].__code__
    expected = ns["handle"](5)
    hot = forkserver.code_run_by(ns["handle"], 5)
    assert forkserver.relocate_functions(hot) >= 4
    helper = ns["helper"]
    assert id(helper) != old["helper"] and helper.__code__ is helper_code
    # Every holder points at the one new object: module dict, registry dict,
    # list, and the class (through setattr, so the type cache sees it).
    assert ns["REGISTRY"]["helper"] is helper and ns["HANDLERS"][0] is helper
    assert ns["HANDLERS"][1] is ns["view"] is ns["REGISTRY"]["view"]
    get = ns["Resource"].__dict__["get"]
    assert id(get) != old["get"] and ns["Resource"]().get.__func__ is get
    # The decorated function: its cell and its wrapper's __wrapped__ agree.
    inner = ns["view"].__closure__[0].cell_contents
    assert id(inner) != old["inner"] and inner is ns["view"].__wrapped__
    assert id(ns["view"]) != old["view"]
    assert (helper.__name__, helper.__qualname__, helper.__module__) == (
        "helper", "helper", None)
    assert ns["handle"](5) == expected == (11, 110, 10, 10)


def test_a_function_with_a_holder_that_cannot_be_repointed_stays_put():
    import weakref
    ns = module(HOLDERS_SOURCE, "<holders-test>")
    old_helper, old_view, old_handle = ns["helper"], ns["view"], ns["handle"]
    pinned = (old_helper,)                       # a tuple cannot be changed
    watched = weakref.ref(old_view)              # nor can what a weak reference names
    bound = ns["Resource"]().get                 # a bound method holds its function
    keyed = {old_handle: "a dict key"}           # a key is not repointed
    hot = forkserver.code_run_by(ns["handle"], 5)
    forkserver.relocate_functions(hot)
    assert ns["handle"] is old_handle and list(keyed) == [old_handle]
    assert ns["helper"] is old_helper is pinned[0] is ns["REGISTRY"]["helper"]
    assert ns["view"] is old_view is watched() is ns["HANDLERS"][1]
    assert ns["Resource"].__dict__["get"] is bound.__func__
    assert ns["handle"](5) == (11, 110, 10, 10)


def test_copy_function_keeps_defaults_attributes_and_annotations():
    def original(a, b=2, *, c=3) -> int:
        "the doc"
        return a + b + c
    original.tag = "kept"
    copy = forkserver.copy_function(original)
    assert copy is not original and copy(1) == 6 and copy(1, c=0) == 3
    assert copy.__dict__ is original.__dict__ and copy.tag == "kept"
    assert (copy.__doc__, copy.__annotations__, copy.__kwdefaults__, copy.__qualname__) == (
        "the doc", {"return": int}, {"c": 3}, original.__qualname__)


def test_nothing_to_move_is_not_an_error():
    assert forkserver.relocate_functions([]) == 0
    assert forkserver.relocate([]) == 0


LOCKED_SOURCE = '''
class Locked(type):
    def __setattr__(cls, name, value):
        raise AttributeError("%s is read-only" % cls.__name__)

class Handler(metaclass=Locked):
    def get(self):
        return "got"

GET = Handler.__dict__["get"]        # also held by a module dict: repointable

def handle():
    return Handler().get(), GET(Handler())
'''


def test_a_class_that_refuses_the_copy_keeps_the_original_everywhere():
    ns = module(LOCKED_SOURCE, "<locked-test>")
    get_id = id(ns["GET"])
    forkserver.relocate_functions(forkserver.code_run_by(ns["handle"]))
    assert id(ns["Handler"].__dict__["get"]) == id(ns["GET"]) == get_id
    assert ns["handle"]() == ("got", "got")
