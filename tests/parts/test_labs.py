"""forkparts/labs.py: each lab switch is an override of the correct server."""
from types import SimpleNamespace

import pytest

from forkparts import labs


class Correct:
    """Stands for forkserver.Server: the methods the lab mixins override."""

    def close_client(self, sock):
        return "closed"

    def die_with_parent(self):
        return print


def options(**switches):
    base = dict(lab_print_in_handler=False, reaper="loop", lab_parent_keeps_client=False,
                lab_child_keeps_listener=False, lab_orphans=False, no_gc_freeze=False,
                lab_iterative=False, keep_alive=0.0)
    base.update(switches)
    return SimpleNamespace(**base)


def test_without_a_switch_the_server_is_the_correct_class():
    assert labs.server_class(options(), Correct) is Correct


@pytest.mark.parametrize("switches, mixin, method", [
    ({"reaper": "none"}, labs.NoReaper, "sigchld_handler"),
    ({"reaper": "once"}, labs.ReapOnce, "reap_in_handler"),
    ({"lab_print_in_handler": True}, labs.PrintInHandler, "reaped_in_handler"),
    ({"lab_parent_keeps_client": True}, labs.ParentKeepsClient, "close_client"),
    ({"lab_child_keeps_listener": True}, labs.ChildKeepsListener, "child_closes"),
    ({"lab_orphans": True}, labs.Orphans, "die_with_parent"),
    ({"no_gc_freeze": True}, labs.NoGcFreeze, "freeze"),
])
def test_each_switch_puts_its_override_in_front(switches, mixin, method):
    cls = labs.server_class(options(**switches), Correct)
    assert cls.__mro__[1:] == (mixin,) + mixin.__mro__[1:-1] + (Correct, object)
    assert getattr(cls, method) is getattr(mixin, method)


def test_switches_combine_and_once_with_print_reaps_one_per_signal():
    cls = labs.server_class(options(reaper="once", lab_print_in_handler=True), Correct)
    assert cls.reap_only_one and cls.reaped_in_handler is labs.PrintInHandler.reaped_in_handler


def test_the_parent_that_keeps_clients_keeps_them():
    server = labs.server_class(options(lab_parent_keeps_client=True), Correct)()
    server.close_client("sock")
    assert server.kept_clients == ["sock"]


def test_orphans_drop_the_parent_death_signal():
    assert Correct().die_with_parent() is print
    assert labs.server_class(options(lab_orphans=True), Correct)().die_with_parent() is None


def test_the_iterative_server_serves_in_the_parent_and_forks_nothing():
    served = []
    cls = labs.server_class(options(lab_iterative=True), Correct)
    server = cls.__new__(cls)
    server.served, server.opts, server.app, server.handler_config = 0, options(timeout=0), "app", "cfg"
    server.child_plan = SimpleNamespace(serve=lambda *args: served.append(args))
    server.status = SimpleNamespace(title_dirty=False)
    assert server.fork_child("sock", ("127.0.0.1", 1), b"", 0.0) == 0   # no child
    assert served == [("sock", ("127.0.0.1", 1), "app", "cfg", b"", 0.0)]
    assert server.served == 1


def test_iterative_refuses_what_needs_a_child():
    assert labs.check_switches(options(lab_iterative=True, no_gc_freeze=True)) is None
    problem = labs.check_switches(options(lab_iterative=True, keep_alive=5.0, reaper="none"))
    assert "--keep-alive" in problem and "--reaper none" in problem
