"""Helper processes that end with the process that started them."""

from __future__ import annotations


def exit_with_parent() -> None:
    """Call first thing in a spawned helper process (a rollout worker, a process pool's worker): a daemon thread ends
    the process once its parent is gone. A parent killed with SIGKILL, or with SIGTERM (which skips the exit handlers
    that stop daemon processes and pools), sends no stop, and a helper blocked on its queue never sees the end of it
    (it holds the pipe's write end too): it waited forever, holding its models' memory. os._exit: nobody is left to
    read what it would flush."""
    import os
    import threading
    from multiprocessing import parent_process

    parent = parent_process()
    if parent is None:  # not a child of a multiprocessing parent
        return

    def watch() -> None:
        parent.join()  # returns when the parent has exited
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
