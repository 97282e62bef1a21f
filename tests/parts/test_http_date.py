"""forkparts.http11.http_date: the Date header every response carries
(RFC 9110 5.6.7), computed from the seconds without time.gmtime()."""
import email.utils
import math
import random
import time
from decimal import Decimal
from fractions import Fraction

import pytest

from forkparts.http11 import http_date

EDGES = [
    0, -1, -86400, 59, 60, 3599, 3600, 86399, 86400,
    68169600,                  # 1972-02-29, the epoch's first leap day
    951782400, 951868800,      # 2000-02-29 and 2000-03-01: a leap century
    978307199, 978307200,      # the last second of 2000, the first of 2001
    1709164800,                # 2024-02-29
    4107456000, 4107542400,    # 2100-02-28, 2100-03-01: no leap day in 2100
    253402300799,              # 9999-12-31 23:59:59
    1765000000.25, 1765000000.999, -0.5,
]


@pytest.mark.parametrize("seconds", EDGES)
def test_the_edges_match_the_standard_librarys_imf_fixdate(seconds):
    assert http_date(seconds) == email.utils.formatdate(seconds, usegmt=True)


def test_a_sample_of_four_centuries_matches_the_standard_library():
    draw = random.Random(17)
    for seconds in (draw.randrange(-2208988800, 10413792000) for _ in range(50000)):
        assert http_date(seconds) == email.utils.formatdate(seconds, usegmt=True), seconds


@pytest.mark.parametrize("seconds", [Decimal("-0.5"), Fraction(-1, 3), Decimal("1765000000.75")])
def test_exact_numbers_floor_as_gmtime_does(seconds):
    assert http_date(seconds) == http_date(math.floor(seconds))
    assert http_date(Decimal("-0.5")) == email.utils.formatdate(-1, usegmt=True)


def test_without_an_argument_it_is_now():
    before = int(time.time())
    stamp = email.utils.parsedate_to_datetime(http_date()).timestamp()
    assert before <= stamp <= time.time()


def test_it_does_not_build_a_struct_time():
    """time.gmtime() in a fresh child writes about ten pages it shares with
    its parent (the C library's zone lock, the zone name decoded through the
    locale, the struct_time): docs/performance.md, "What our part costs"."""
    assert "gmtime" not in http_date.__code__.co_names
    assert "localtime" not in http_date.__code__.co_names
