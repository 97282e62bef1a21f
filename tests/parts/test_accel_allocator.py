"""fill_allocator_holes: a child's new objects go into fresh pools, not into
holes on pages shared with the parent (docs/performance.md)."""
import subprocess
import sys
import textwrap

from tests.conftest import ROOT

POOL_BYTES = 16 * 1024    # CPython 3.11's pymalloc pool


def run_script(body):
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, %r)
        from forkparts import accel
    """ % ROOT) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_free_blocks_are_read_per_size_class_and_holes_are_counted():
    sizes = run_script("""
        before = accel.pymalloc_free_blocks()
        keep = [bytes(63) for _ in range(4000)]   # 96-byte blocks
        del keep[::2]                             # 2000 holes among them
        after = accel.pymalloc_free_blocks()
        print(all(size % 16 == 0 and 16 <= size <= 512 for size in after))
        print(after.get(96, 0) - before.get(96, 0))
    """)
    assert sizes[0] == "True"
    assert int(sizes[1]) >= 1900


def test_filling_leaves_no_holes_in_old_pools():
    free_96, filler = run_script("""
        keep = [bytes(63) for _ in range(4000)]
        del keep[::2]
        filler = accel.fill_allocator_holes()
        print(accel.pymalloc_free_blocks().get(96, 0), len(filler))
    """)
    # What is left free of that class is at most the rest of one fresh pool.
    assert int(free_96) < POOL_BYTES // 96
    assert int(filler) >= 2000
