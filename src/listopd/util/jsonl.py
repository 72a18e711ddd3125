"""The one reader of JSONL files (task files, model outputs, raw review dumps): plain or gzip-compressed,
UTF-8, one JSON value per line, every problem named by file and line."""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from typing import Iterator

from listopd.util.errors import InputError

MAX_LINE_BYTES = 1 << 20  # the longest record line accepted (1 MiB)


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _DuplicateKey(k)
        d[k] = v
    return d


@contextlib.contextmanager
def open_binary(path):
    """A plain or gzip-compressed file (recognised by its magic bytes, whatever its name), open for reading
    bytes; InputError naming the file when it cannot be opened."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError("file not found", path=str(path)) from None
    except OSError as e:
        raise InputError(f"cannot open: {e.strerror or e}", path=str(path)) from None
    with f:
        if f.read(2) == b"\x1f\x8b":
            f.seek(0)
            with gzip.GzipFile(fileobj=f, mode="rb") as g:
                yield g
        else:
            f.seek(0)
            yield f


def iter_jsonl(path, *, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, object, InputError | None]]:
    """Yield (line_number, value, error) for every non-blank line of a (possibly gzipped) UTF-8 JSONL file;
    value is None where error is set. Raises InputError for problems of the whole file (missing, unreadable,
    corrupt gzip, no records at all)."""
    path = str(path)
    lineno, records = 0, 0
    with open_binary(path) as f:
        while True:
            try:
                line = f.readline(max_line_bytes + 1)
            except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:  # zlib.error: a bad deflate block
                raise InputError(f"corrupt gzip stream: {e}", path=path, line=lineno + 1) from None
            if not line:
                break
            lineno += 1
            if len(line) > max_line_bytes and not (len(line) == max_line_bytes + 1 and line.endswith(b"\n")):
                while line and not line.endswith(b"\n"):  # skip the rest of the long line
                    line = f.readline(1 << 16)
                records += 1
                yield lineno, None, InputError(
                    f"line longer than {max_line_bytes} bytes (the limit per record)", path=path, line=lineno)
                continue
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue
            records += 1
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, InputError(
                    f"not valid UTF-8: byte 0x{line[e.start]:02x} at byte {e.start + 1} of the line",
                    path=path, line=lineno)
                continue
            try:
                value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
            except _DuplicateKey as e:
                yield lineno, None, InputError(f"not valid: key {e.args[0]!r} appears twice in one object",
                                               path=path, line=lineno)
                continue
            except RecursionError:
                yield lineno, None, InputError("not JSON: nested too deeply", path=path, line=lineno)
                continue
            except json.JSONDecodeError as e:
                yield lineno, None, InputError(f"not JSON: {e.msg} at column {e.colno}", path=path, line=lineno)
                continue
            except ValueError as e:  # e.g. an integer with too many digits
                yield lineno, None, InputError(f"not JSON: {e}", path=path, line=lineno)
                continue
            yield lineno, value, None
    if records == 0:
        raise InputError("empty file: no records", path=path)
