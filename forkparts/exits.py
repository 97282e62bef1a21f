"""The child's exit statuses, and the exception that means one.

DESIGN note: the child says how it ended only through its exit status, which
the parent decodes in its log (EXIT_NAMES); both sides read the codes from
here, so neither front door has to import the other to agree on them.
"""

# Child exit statuses (the parent decodes them in its log).
EXIT_OK = 0
EXIT_ERROR = 1            # the app raised, or our own code failed
EXIT_MEMORY_LIMIT = 3     # --limit-memory was hit (MemoryError)
EXIT_CPU_LIMIT = 4        # --limit-cpu was hit (SIGXCPU)
EXIT_HOOK_FAILED = 5      # the post_fork hook raised
EXIT_NAMES = {
    EXIT_ERROR: "error (see the traceback above)",
    EXIT_MEMORY_LIMIT: "memory limit hit (--limit-memory)",
    EXIT_CPU_LIMIT: "CPU limit hit (--limit-cpu)",
    EXIT_HOOK_FAILED: "post_fork hook failed",
}


class CPULimitExceeded(BaseException):
    """Raised from the SIGXCPU handler the parent installs under --limit-cpu."""
