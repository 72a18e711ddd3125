"""Atomic file writes: write a temporary file in the same folder, fsync, rename. A crash or a full disk
leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile

from listopd.util.errors import ListopdError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        # ".NAME.XXXX.tmp": hidden, and never matched by a reader's "*.json" glob if a kill leaves it behind
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_directory(directory)
    except OSError as e:
        raise ListopdError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_error(e: Exception, path) -> OSError | None:
    """The OSError behind a failed write by a serialiser, or None when `e` is not a write failure.

    On a full disk safetensors raises SafetensorError ("… I/O error: No space left on device (os error 28)")
    and torch.save a bare RuntimeError ("[enforce fail at inline_container.cc] unexpected pos …"); neither is
    an OSError, and the second names no cause. Measured on a real full tmpfs (tests/test_real_disk.py)."""
    if isinstance(e, OSError):
        return e
    text = str(e)
    match = re.search(r"\(os error (\d+)\)", text)
    if match:
        code = int(match.group(1))
        return OSError(code, os.strerror(code), os.fspath(path))
    if isinstance(e, RuntimeError) and ("unexpected pos" in text or "inline_container" in text):
        directory = os.path.dirname(os.path.abspath(path))
        free = shutil.disk_usage(directory).free if os.path.isdir(directory) else None
        if free is not None and free < 1 << 20:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path))
        return OSError(errno.EIO, f"torch.save failed ({text.strip()}); {free} bytes free", os.fspath(path))
    return None


@contextlib.contextmanager
def refused_write(tmp, what: str, *, note: str = ""):
    """Inside the block a serialiser writes into the temporary `tmp` (a file or folder). A failed write
    becomes one ListopdError naming `what` and the cause (see write_error), `tmp` is removed, and whatever was
    there before is left as it was; any other exception passes through unchanged."""
    try:
        yield
    except Exception as e:
        cause = write_error(e, tmp)
        if cause is None:
            raise
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.unlink(tmp)
        raise ListopdError(f"cannot write {what}: {cause.strerror or cause}{note}") from e


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Delete the temporary files that a killed atomic write left in `directory`; returns how many."""
    removed = 0
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        if name.startswith(".") and name.endswith(".tmp"):
            os.unlink(os.path.join(directory, name))
            removed += 1
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj):
    """Replace non-finite floats by None, recursively (JSON has no infinity or NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (best effort: not every platform can fsync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
