# Copyright (c) 2026 acmeops.housekeeping contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Byte-exact CSV and JSON output in acme2certifier's report format, written as a stream."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import tempfile
from typing import Any, Dict, Iterable, List, Optional

from .errors import ReportError


def _clean_text(value: Any) -> Any:
    """Delete line breaks from strings, as acme2certifier does before writing CSV."""
    if isinstance(value, str):
        return value.replace("\r\n", "\n").replace("\r", "").replace("\n", "")
    return value


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
        self.temp_path: Optional[str] = None
        self._handle: Optional[io.BufferedWriter] = None
        if dest:
            check_destination(dest)
            if write_file:
                self._open_temp(dest)

    def _open_temp(self, dest: str) -> None:
        directory = os.path.dirname(os.path.abspath(dest))
        try:
            # mkstemp creates the file with mode 0600, so contacts are never readable by others
            # while the report is being written.
            handle, self.temp_path = tempfile.mkstemp(
                prefix=f".{os.path.basename(dest)}.", suffix=".tmp", dir=directory
            )
        except OSError as exc:
            raise ReportError(
                f"Cannot create a file in {directory} for the report {dest}: {exc.strerror}. "
                "Make the directory writable for this user, or choose another dest.",
                dest=dest,
            ) from exc
        self._handle = os.fdopen(handle, "wb")

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
        if self._handle is None:
            return not unchanged
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None
            if unchanged:
                self.discard()
                return False
            _copy_attributes(self.dest, self.temp_path)  # type: ignore[arg-type]
            os.replace(self.temp_path, self.dest)  # type: ignore[arg-type]
            self.temp_path = None
        except OSError as exc:
            self.discard()
            raise _write_failure(self.dest, exc) from exc
        return True

    def discard(self) -> None:
        """Remove the temporary file, leaving dest as it was."""
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
            self._handle = None
        if self.temp_path and os.path.exists(self.temp_path):
            os.unlink(self.temp_path)
        self.temp_path = None


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


def _copy_attributes(dest: str, temp_path: str) -> None:
    """Give the new file the mode and owner of the file it replaces, like Ansible's file modules.

    A new report keeps the 0600 mode of its temporary file.
    """
    try:
        current = os.stat(dest)
    except FileNotFoundError:
        return
    os.chmod(temp_path, current.st_mode & 0o7777)
    try:
        os.chown(temp_path, current.st_uid, current.st_gid)
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
    """CSV as acme2certifier writes it: every string quoted, numbers bare, CRLF after each row."""

    def __init__(self, sink: Sink, columns: List[str]) -> None:
        self.sink = sink
        self.columns = columns
        self.rows = 0
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, delimiter=",", quotechar='"', quoting=csv.QUOTE_NONNUMERIC)
        self._emit(columns)

    def _emit(self, values: Iterable[Any]) -> None:
        self._writer.writerow([_clean_text(value) for value in values])
        self.sink.write(self._buffer.getvalue())
        self._buffer.seek(0)
        self._buffer.truncate()

    def add(self, row: Dict[str, Any]) -> None:
        self._emit(row.get(column, "") for column in self.columns)
        self.rows += 1

    def close(self) -> None:
        return None


class JsonArrayWriter:
    """A JSON array written one element at a time, identical to dumping the whole list."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.rows = 0

    def add(self, element: Any) -> None:
        self.sink.write(("[\n" if self.rows == 0 else ",\n") + json_text(element, 1))
        self.rows += 1

    def close(self) -> None:
        self.sink.write("[]" if self.rows == 0 else "\n]")


def make_writer(sink: Sink, report_format: str, columns: List[str]) -> Any:
    """Return the CSV or JSON writer for a report format."""
    if report_format == "csv":
        return CsvWriter(sink, columns)
    return JsonArrayWriter(sink)
