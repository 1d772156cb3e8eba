# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Byte-exact CSV and JSON output in acme2certifier's report format, written as a stream."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import operator
import os
import tempfile
from typing import Any, Dict, List, Optional, Sequence

from .errors import ReportError


def _clean_text(value: Any) -> Any:
    """Delete line breaks from strings, as acme2certifier does before writing CSV."""
    if isinstance(value, str):
        return value.replace("\r\n", "\n").replace("\r", "").replace("\n", "")
    return value


# Rows or array elements that a writer collects before one Sink.write call. Each call
# encodes, hashes and writes its text, so a page costs that once instead of once per row.
# 500 matches the default batch_size of the reads, and one page of text is held in memory.
WRITE_PAGE_ROWS = 500
# Characters a JSON writer buffers at most before it writes them.
WRITE_PAGE_CHARS = 1 << 18


def json_text(value: Any, indent_level: int = 0) -> str:
    """Serialise like json.dumps(indent=4, ensure_ascii=False, default=str), then indent."""
    text = json.dumps(value, ensure_ascii=False, indent=4, default=str)
    if indent_level:
        pad = " " * (4 * indent_level)
        text = "\n".join(pad + line for line in text.split("\n"))
    return text


class Sink:
    """Destination of report text: a temporary file beside dest, a checksum, and optionally memory.

    In check mode no file is written; the checksum still shows whether dest would change.
    """

    def __init__(self, dest: Optional[str], write_file: bool, keep_content: bool = False) -> None:
        self.dest = dest
        self.digest = hashlib.sha1()  # Ansible reports file checksums as SHA-1.
        self.size = 0
        self.content: Optional[List[str]] = [] if keep_content else None
        self._temp: Optional[TempFile] = None
        self._handle: Optional[io.BufferedWriter] = None
        if dest:
            check_destination(dest)
            if write_file:
                self._open_temp(dest)

    def _open_temp(self, dest: str) -> None:
        directory = os.path.dirname(os.path.abspath(dest))
        try:
            # Mode 0600, so contacts are never readable by others while the report is written.
            self._temp = TempFile.create(directory, f".{os.path.basename(dest)}.", ".tmp")
        except OSError as exc:
            raise ReportError(
                f"Cannot create a file in {directory} for the report {dest}: {exc.strerror}. "
                "Make the directory writable for this user, or choose another dest.",
                dest=dest,
            ) from exc
        self._handle = os.fdopen(self._temp.fd, "wb", closefd=False)

    def write(self, text: str) -> None:
        data = text.encode("utf-8")
        self.digest.update(data)
        self.size += len(data)
        if self.content is not None:
            self.content.append(text)
        if self._handle is not None:
            try:
                self._handle.write(data)
            except OSError as exc:
                self.discard()
                raise _write_failure(self.dest, exc) from exc

    @property
    def checksum(self) -> str:
        return self.digest.hexdigest()

    def text(self) -> str:
        return "".join(self.content or [])

    def commit(self) -> bool:
        """Move the finished file over dest unless dest already has this content."""
        if self.dest is None:
            return False
        unchanged = file_checksum(self.dest) == self.checksum
        if self._handle is None or self._temp is None:
            return not unchanged
        try:
            self._handle.flush()
            self._handle.close()
            self._handle = None
            if unchanged:
                self.discard()
                return False
            _copy_attributes(self.dest, self._temp.fd)
            self._temp.publish(self.dest, replace=True)
            self._temp = None
        except OSError as exc:
            self.discard()
            raise _write_failure(self.dest, exc) from exc
        return True

    def discard(self) -> None:
        """Remove the temporary file, leaving dest as it was."""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
        if self._temp is not None:
            self._temp.discard()
            self._temp = None


class TempFile:
    """A new file that gets its final name only when it is complete.

    Where the file system supports O_TMPFILE the file has no name until publish(), so a run
    killed with SIGKILL leaves nothing behind. Elsewhere it is a hidden mkstemp file that
    discard() removes.
    """

    def __init__(self, fd: int, directory: str, path: Optional[str]) -> None:
        self.fd = fd
        self.directory = directory
        # None while the file has no name (O_TMPFILE).
        self.path = path

    @classmethod
    def create(cls, directory: str, prefix: str, suffix: str) -> "TempFile":
        """Open a file with mode 0600 in directory, without a name where possible."""
        flag = getattr(os, "O_TMPFILE", 0)
        # Naming such a file later needs /proc to reach it through its descriptor.
        if flag and os.path.isdir("/proc/self/fd"):
            try:
                return cls(os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, 0o600), directory, None)
            except OSError as exc:
                # Kernels and file systems without O_TMPFILE (NFS, old kernels) raise these errors.
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise
        fd, path = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
        return cls(fd, directory, path)

    def _link(self, name: str) -> None:
        """Give the unnamed file a name through its /proc/self/fd entry."""
        # Only linkat() with a directory descriptor follows the /proc link; plain link() would
        # try to link the symbolic link itself.
        proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(str(self.fd), name, src_dir_fd=proc, follow_symlinks=True)
        finally:
            os.close(proc)

    def publish(self, dest: str, replace: bool) -> None:
        """Flush the file to disk and give it the name dest in one atomic step."""
        os.fsync(self.fd)
        if self.path is None:
            if not replace or not os.path.lexists(dest):
                try:
                    self._link(dest)
                except FileExistsError:
                    if not replace:
                        raise
                else:
                    self._close()
                    return
            # link() cannot replace a file: name the file beside dest for a moment, then rename.
            self.path = os.path.join(self.directory, f".{os.path.basename(dest)}.{os.getpid()}.{self.fd}.tmp")
            self._link(self.path)
        if replace:
            os.replace(self.path, dest)
        else:
            os.link(self.path, dest)
            os.unlink(self.path)
        self.path = None
        self._close()

    def discard(self) -> None:
        """Close the file and remove its name if it has one."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.path = None
        self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def check_destination(dest: str) -> None:
    """Fail early, in check mode too, when a report could not be written to dest."""
    directory = os.path.dirname(os.path.abspath(dest))
    if os.path.isdir(dest):
        raise ReportError(
            f"The report path {dest} is a directory. Give the path of a report file, for "
            f"example {os.path.join(dest, 'report.csv')}.",
            dest=dest,
        )
    if not os.path.isdir(directory):
        raise ReportError(
            f"The directory of the report file {dest} does not exist. Create {directory} "
            "first, or choose another path.",
            dest=dest,
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ReportError(
            f"The directory {directory} of the report file {dest} is not writable for this "
            "user. Fix its permissions, run the task as another user, or choose another path.",
            dest=dest,
        )


def _copy_attributes(dest: str, fd: int) -> None:
    """Give the new file the mode and owner of the file it replaces, like Ansible's file modules.

    A new report keeps the 0600 mode of its temporary file.
    """
    try:
        current = os.stat(dest)
    except FileNotFoundError:
        return
    os.fchmod(fd, current.st_mode & 0o7777)
    try:
        os.fchown(fd, current.st_uid, current.st_gid)
    except PermissionError:
        pass  # Only root can give a file away; the mode is kept either way.


def _write_failure(dest: Optional[str], exc: OSError) -> ReportError:
    if exc.errno == errno.ENOSPC:
        return ReportError(
            f"No space left on the device for the report {dest}. The old file is unchanged; free "
            "space or choose another dest.",
            dest=dest,
        )
    return ReportError(f"Writing the report {dest} failed: {exc}. The old file is unchanged.", dest=dest)


def file_checksum(path: str) -> Optional[str]:
    """Return the SHA-1 of a file, or None when it does not exist."""
    if not os.path.isfile(path):
        return None
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class CsvWriter:
    """CSV as acme2certifier writes it: every string quoted, numbers bare, CRLF after each row.

    Rows are written a page at a time. close() writes the last page, so call it after the last add().
    """

    def __init__(self, sink: Sink, columns: List[str], page_rows: int = WRITE_PAGE_ROWS) -> None:
        self.sink = sink
        self.columns = columns
        self.rows = 0
        self._page_rows = max(1, page_rows)
        self._page: List[Sequence[Any]] = []
        # itemgetter returns a tuple only for two or more keys.
        self._getter = operator.itemgetter(*columns) if len(columns) >= 2 else None
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, delimiter=",", quotechar='"', quoting=csv.QUOTE_NONNUMERIC)
        self._page.append(list(columns))
        self._flush()

    def _values(self, row: Dict[str, Any]) -> Sequence[Any]:
        """Return the row's values in column order, "" for a missing column."""
        # A dict subclass may define __missing__, which itemgetter would call and row.get() does not.
        if self._getter is not None and type(row) is dict:  # pylint: disable=unidiomatic-typecheck
            try:
                return self._getter(row)
            except KeyError:
                pass
        return [row.get(column, "") for column in self.columns]

    def _render(self, page: List[Sequence[Any]]) -> str:
        self._writer.writerows(page)
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def _flush(self) -> None:
        if not self._page:
            return
        page, self._page = self._page, []
        text = self._render(page)
        # Every row ends in CRLF. Any further CR or LF comes from a value, and only then do
        # strings need their line breaks removed, so the page is rendered again.
        if text.count("\n") + text.count("\r") != 2 * len(page):
            text = self._render([[_clean_text(value) for value in values] for values in page])
        self.sink.write(text)

    def add(self, row: Dict[str, Any]) -> None:
        self._page.append(self._values(row))
        self.rows += 1
        if len(self._page) >= self._page_rows:
            self._flush()

    def close(self) -> None:
        self._flush()


class JsonArrayWriter:
    """A JSON array written one element at a time, identical to dumping the whole list.

    Elements are serialised in add() and written a page at a time: page_rows elements or
    WRITE_PAGE_CHARS characters, whichever comes first, so large elements such as the accounts
    of the nested report do not pile up in memory. close() writes the rest.
    """

    def __init__(self, sink: Sink, page_rows: int = WRITE_PAGE_ROWS) -> None:
        self.sink = sink
        self.rows = 0
        self._page_rows = max(1, page_rows)
        self._parts: List[str] = []
        self._chars = 0

    def add(self, element: Any) -> None:
        text = ("[\n" if self.rows == 0 else ",\n") + json_text(element, 1)
        self._parts.append(text)
        self._chars += len(text)
        self.rows += 1
        if len(self._parts) >= self._page_rows or self._chars >= WRITE_PAGE_CHARS:
            self._flush()

    def _flush(self) -> None:
        if self._parts:
            self.sink.write("".join(self._parts))
            self._parts = []
            self._chars = 0

    def close(self) -> None:
        self._parts.append("[]" if self.rows == 0 else "\n]")
        self._flush()


def make_writer(sink: Sink, report_format: str, columns: List[str]) -> Any:
    """Return the CSV or JSON writer for a report format."""
    if report_format == "csv":
        return CsvWriter(sink, columns)
    return JsonArrayWriter(sink)
