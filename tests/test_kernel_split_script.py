"""scripts/kernel_split.py: a perf script's samples put in their process
(the server's parent, its children, nothing else) and kernel path."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "scripts"))

import kernel_split  # noqa: E402

# perf script --show-task-events -F pid,ip,sym,dso, as perf 6 prints it
TEXT = """\
    0 PERF_RECORD_FORK(1:1):(0:0)
  100 PERF_RECORD_FORK(101:101):(100:100)
  555 PERF_RECORD_FORK(556:556):(555:555)

  100 
	ffffffff8100 copy_page_range+0x731 ([kernel.kallsyms])
	ffffffff8101 dup_mmap+0x430 ([kernel.kallsyms])
	ffffffff8102 __do_sys_clone+0x8d ([kernel.kallsyms])
	ffffffff8103 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])
	7f0000000001 _Fork+0x26 (/usr/lib/x86_64-linux-gnu/libc.so.6)

  101 
	ffffffff8200 copy_mc_enhanced_fast_string+0x6 ([kernel.kallsyms])
	ffffffff8201 do_wp_page+0x5a4 ([kernel.kallsyms])
	ffffffff8202 asm_exc_page_fault+0x22 ([kernel.kallsyms])
	7f0000000002 _PyEval_EvalFrameDefault+0x181b (/opt/py/lib/libpython3.11.so.1.0)

  101 
	7f0000000003 _PyEval_EvalFrameDefault+0x20 (/opt/py/lib/libpython3.11.so.1.0)

  101 
	ffffffff8300 unmap_page_range+0x1 ([kernel.kallsyms])
	ffffffff8301 __x64_sys_exit_group+0x14 ([kernel.kallsyms])

  556 
	7f0000000004 main+0x1 (/usr/bin/wrk)
"""


def test_samples_are_split_by_process_and_path():
    counts = kernel_split.split_text(TEXT, 100)
    assert counts == {("parent", "fork()"): 1, ("child", "page fault"): 1,
                      ("child", "user: libpython"): 1, ("child", "exit"): 1}


def test_an_unknown_system_call_is_named_and_a_kernel_top_is_other():
    assert kernel_split.path_of(["x __x64_sys_sendto+0x1 ([kernel.kallsyms])"]) == "sendto()"
    assert kernel_split.path_of(["x irq_exit+0x1 ([kernel.kallsyms])"]) == \
        "kernel, other (interrupts, scheduling)"
    assert kernel_split.path_of(["x ffi_call+0x1 (/usr/lib/libffi.so.8)"]) == "user: libffi.so.8"


def test_a_checkout_is_registered_as_bench_py_does(tmp_path):
    import bench
    (tmp_path / "forkserver.py").write_text("")
    try:
        kernel_split.parse_args(["--servers", "before-tuned", "--checkout", "before=%s" % tmp_path])
        assert bench.server_root("before-tuned") == str(tmp_path)
    finally:
        bench.CHECKOUTS.pop("before", None)


@pytest.mark.parametrize("arg, message", [("before", "expected LABEL=PATH"),
                                          ("before=/nonexistent", "no forkserver.py in"),
                                          ("stdlib=.", "is taken by a server")])
def test_a_bad_checkout_is_refused_as_bench_py_refuses_it(arg, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        kernel_split.parse_args(["--checkout", arg])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
