"""WSGI apps for the OS process lab (docs/labs.md), named by behaviour."""
import gc
import json
import os
import time

from tests.apps import query_param

# Lab 8 (copy-on-write): a heap of small GC-tracked objects built at import, in
# the parent, before the first fork.  Lists, because CPython untracks dicts and
# tuples holding only atoms (gc docs, "is_tracked"), and an untracked object is
# never touched by a collection.  300 000 one-item lists are about 30 MB.
COW_HEAP_ITEMS = int(os.environ.get("LAB_HEAP_ITEMS", "300000"))
COW_HEAP = [[i] for i in range(COW_HEAP_ITEMS)]
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def memory_kib():
    """This process's resident (RSS) and private (USS) memory, from the kernel.

    USS is what this process alone holds: the pages it wrote to since fork
    (Private_Clean + Private_Dirty of /proc/self/smaps_rollup, Linux 4.14+)."""
    fields = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                fields[name] = int(rest.split()[0])
    return {"rss_kib": fields["Rss"],
            "uss_kib": fields["Private_Clean"] + fields["Private_Dirty"],
            "heap_items": COW_HEAP_ITEMS}



def cow_report(environ, start_response):
    """Runs a full collection (as any long-lived app eventually does), holds
    the child ?s= seconds so it can be watched, then answers its memory as JSON.
    ?gc=0 skips the collection."""
    if query_param(environ, "gc", "1") == "1":
        gc.collect()
    time.sleep(float(query_param(environ, "s", "0")))
    body = (json.dumps(memory_kib()) + "\n").encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]

