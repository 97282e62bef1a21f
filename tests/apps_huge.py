"""An app whose module holds 16 MiB of written memory, so that the parent's
heap has dense 2 MiB ranges whatever the allocator's layout
(tests/parts/test_accel_huge_pages.py)."""
from tests.apps import hello

BALLAST = b"x" * (16 << 20)   # one malloc'd mapping, every page written

app = hello
