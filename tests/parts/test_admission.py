"""forkparts/admission.py: the rules that decide whether the parent may fork now."""
import time
from types import SimpleNamespace

from forkparts.admission import Admission


def options(max_children=0, per_ip=0, rate=0.0):
    return SimpleNamespace(max_children=max_children, max_children_per_ip=per_ip,
                           max_fork_rate=rate)


def test_the_cap_stops_forks_at_max_children_and_zero_means_none():
    capped = Admission(options(max_children=2))
    assert capped.may_fork(1) and not capped.may_fork(2)
    assert Admission(options(max_children=0)).may_fork(10 ** 6)


def test_a_paused_admission_refuses_until_the_pause_ends():
    admission = Admission(options())
    admission.pause(0.05)
    assert not admission.may_fork(0)
    time.sleep(0.06)
    assert admission.may_fork(0) and admission.paused_until == 0.0


def test_the_fork_rate_bucket_holds_one_token_even_below_one_per_second():
    admission = Admission(options(rate=0.5))
    assert admission.may_fork(0)
    admission.forked(("127.0.0.1", 1))
    assert not admission.may_fork(0)
    # Refused: it pauses until the next token, about 2 s at 0.5/s.
    assert 1.5 < admission.paused_until - time.monotonic() <= 2.0


def test_the_bucket_refills_at_the_rate():
    admission = Admission(options(rate=100.0))
    for _ in range(100):
        admission.forked(("127.0.0.1", 1))
    assert not admission.may_fork(0)
    admission.paused_until = 0.0
    time.sleep(0.05)
    assert admission.may_fork(0)


def test_per_ip_counts_a_clients_children_and_frees_them():
    admission = Admission(options(per_ip=2))
    client, other = ("10.0.0.1", 1), ("10.0.0.2", 1)
    admission.forked(client)
    admission.count_ip(client, 1)   # a connection the accept filter holds
    assert admission.over_ip_limit(client) and not admission.over_ip_limit(other)
    admission.count_ip(client, -1)
    assert not admission.over_ip_limit(client)
    admission.count_ip(client, -1)
    assert admission.per_ip == {}


def test_a_unix_socket_client_has_no_address_to_count():
    admission = Admission(options(per_ip=1))
    admission.count_ip("", 1)
    assert admission.per_ip == {} and not admission.over_ip_limit("")
