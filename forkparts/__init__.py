"""forkserver's parts: each module one concern, imported by the two front doors.

    forkserver.py     the parent: main() and the loop (wait, accept, fork, close, reap)
    wsgi_handler.py   the child: serve_connection() -> exit status

Imports point one way: the front doors import these parts, and a part imports
only other parts (never a front door), with no circle anywhere
(tests/test_layout.py checks it).  Each module's docstring says why it is a
room of its own.
"""

__version__ = "1.0.0"
