"""Opening the files `import` and `diagnose` are pointed at, for the readers in this package.

Only regular files are opened, and never in a way that can block: a FIFO named like an event file
would otherwise hang the reader for ever, waiting for a writer. Text is read only in an encoding
known to be right — UTF-8 (with or without a byte-order mark), or UTF-16/UTF-32 with one; other
files get one line that says what they are (gzip, PNG, an SQLite database, Latin-1 text, ...) and
how to convert them, instead of a `UnicodeDecodeError` from deep inside the csv module.

>>> kind_of(0o010644)   # stat.S_IFIFO | 0o644
'a FIFO (named pipe)'
"""

from __future__ import annotations

import codecs
import io
import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO, TextIO

HEAD = 64 * 1024  # bytes read to recognise a file: magic numbers, BOMs, the first rows

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)
# Byte-order marks, longest first (UTF-32 LE starts with UTF-16 LE's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Magic numbers of files people point a metrics reader at by mistake: (prefix, what, what to do).
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (gunzip)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", ""),
    (b"SQLite format 3\x00", "an SQLite database", "a tunescope store is read with --store DIR"),
    (b"PK\x03\x04", "a ZIP archive", "an .xlsx workbook? save it as CSV (UTF-8)"),
    (b"%PDF", "a PDF document", ""),
    (b"PAR1", "a Parquet file", "convert it: pandas.read_parquet(...).to_csv(...)"),
    (b"\xff\xd8\xff", "a JPEG image", ""),
    (b"\x7fELF", "an executable", ""),
    (b"BZh", "bzip2-compressed", "decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first (unzstd)"),
)


def kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words ("a FIFO (named pipe)"); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def open_binary(path: Path, error: type[Exception]) -> BinaryIO:
    """`path` opened for reading bytes, if it is a regular file (symlinks followed); else
    `error` naming the file and what it is. Never blocks on a FIFO or a device."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer; fstat then tells.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except IsADirectoryError:
        raise error(f"{path} is a directory, not a regular file") from None
    except OSError as exc:
        raise error(f"{path}: cannot open it: {exc.strerror}") from None
    try:
        what = kind_of(os.fstat(fd).st_mode)
        if what is not None:
            raise error(f"{path} is {what}, not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def describe(head: bytes) -> tuple[str, str] | None:
    """(what the file is, what to do) when its first bytes are a known binary format."""
    for magic, what, todo in _MAGIC:
        if head.startswith(magic):
            return what, todo
    # A record's length is 8 little-endian bytes, some of them NUL: text never has one, and the
    # check (and its import of TensorBoard) is skipped for it.
    if b"\x00" in head[:8] and is_tfrecord(head):
        return "a TensorBoard event file", "pass the directory that holds it"
    return None


def is_tfrecord(head: bytes) -> bool:
    """Whether `head` starts with a TFRecord (the framing of TensorBoard event files): a
    length, then that length's masked CRC32C."""
    if len(head) < 12:
        return False
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    return bool(masked_crc32c(head[:8]) == struct.unpack("<I", head[8:12])[0])


def open_text(path: Path, error: type[Exception]) -> TextIO:
    """`path` as text in the encoding its bytes show (UTF-8, or a BOM's), for the csv module.

    Raises `error` naming the file for anything else: not a regular file, a binary format,
    UTF-16 without a BOM, text that is not UTF-8 in its first `HEAD` bytes (later bytes fail
    while reading: see `decode_error`).
    """
    fh = open_binary(path, error)
    try:
        head = fh.read(HEAD)
        encoding = _encoding(path, head, whole=len(head) < HEAD, error=error)
        fh.seek(0)
        return io.TextIOWrapper(fh, encoding=encoding, newline="")
    except BaseException:
        fh.close()
        raise


def _encoding(path: Path, head: bytes, *, whole: bool, error: type[Exception]) -> str:
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding
    found = describe(head)
    if found is not None:
        what, todo = found
        raise error(f"{path} is {what}, not a CSV file" + (f"; {todo}" if todo else ""))
    if b"\x00" in head:
        utf16 = _utf16_without_bom(head)
        if utf16:
            raise error(
                f"{path} looks like {utf16} text without a byte-order mark; convert it to UTF-8: "
                f"iconv -f {utf16} -t UTF-8 {path} > {_converted(path)}"
            )
        raise error(f"{path} holds binary data (NUL bytes), not CSV text")
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
    except UnicodeDecodeError as exc:
        line = head.count(b"\n", 0, exc.start) + 1
        raise error(not_utf8(path, exc.object[exc.start], line)) from None
    return "utf-8"


def _utf16_without_bom(head: bytes) -> str | None:
    """Which UTF-16 (LE: odd bytes NUL, BE: even bytes NUL) `head` looks like, if any: ASCII
    text in UTF-16 has a NUL in every other byte."""
    sample = head[: len(head) // 2 * 2][:4096]
    if len(sample) < 4:
        return None
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2
    if odd > 0.9 * half and even < 0.1 * half:
        return "UTF-16LE"
    if even > 0.9 * half and odd < 0.1 * half:
        return "UTF-16BE"
    return None


def _converted(path: Path) -> Path:
    return path.with_name(f"{path.stem}.utf8{path.suffix}")


def not_utf8(path: Path, byte: int, line: int) -> str:
    """The message for a file that is not UTF-8: where, and the command that converts it."""
    return (
        f"{path} is not UTF-8 text (byte 0x{byte:02x} on line {line}); if it is Latin-1 or "
        f"Windows-1252, convert it: iconv -f WINDOWS-1252 -t UTF-8 {path} > {_converted(path)}"
    )


def decode_error(path: Path, encoding: str) -> str:
    """The message for a decoding error met while reading `path` (past the first `HEAD` bytes):
    the file is read again, as bytes, to find the line."""
    if encoding not in ("utf-8", "utf-8-sig"):
        return f"{path} is not valid {encoding.upper()} text; convert it to UTF-8"
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset = 1, 0
    with open_binary(path, ValueError) as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # `exc.start` counts from the bytes the decoder still held plus this chunk
                held = len(exc.object) - len(chunk)
                start = max(0, exc.start - held)
                return not_utf8(path, exc.object[exc.start], line + chunk.count(b"\n", 0, start))
            line += chunk.count(b"\n")
            offset += len(chunk)
    return f"{path} is not valid UTF-8 text near byte {offset}"
