"""LZW exactly as Go's ``compress/lzw`` with LSB bit order and 8-bit literals (spec §1.5).

memberlist compresses with ``lzw.NewWriter(w, lzw.LSB, 8)``; this module produces the same bytes and
accepts the same streams as Go's reader:

* codes are packed least-significant-bit first, 9 bits wide to start with, at most 12 bits;
  256 is the clear code, 257 end-of-data, 258 the first dictionary code;
* the writer emits a clear code before anything else; it widens the code size when the next free code
  reaches the current power of two; when the next free code reaches 4095 it emits a clear code (at
  12 bits) and restarts at 9 bits with an empty dictionary; on close it writes the pending code,
  advances the code counter once more (which may widen the end code or emit a final clear), writes
  257 and pads the last byte with zero bits;
* the reader widens when its next code reaches ``2**width``; once the 12-bit table is full it stops
  adding entries until the next clear; a code equal to the next free code expands to the previous
  expansion plus its own first byte (KwKwK). A stream that ends without 257 is an error, as in Go;
  bytes after 257 are ignored.
"""

from __future__ import annotations

from typing import Final

from discoverd.errors import GossipDecodeError

CLEAR: Final = 256
EOF: Final = 257
MAX_WIDTH: Final = 12
_MAX_CODE: Final = (1 << MAX_WIDTH) - 1  # 4095: the writer resets when its next code reaches this
_LITERALS: Final[tuple[bytes, ...]] = tuple(bytes((i,)) for i in range(256))


class _BitWriter:
    """Packs variable-width codes LSB-first into a bytearray."""

    __slots__ = ("bits", "nbits", "out")

    def __init__(self) -> None:
        self.out = bytearray()
        self.bits = 0
        self.nbits = 0

    def write(self, code: int, width: int) -> None:
        bits = self.bits | (code << self.nbits)
        nbits = self.nbits + width
        out = self.out
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
        self.bits = bits
        self.nbits = nbits

    def finish(self) -> bytes:
        if self.nbits > 0:
            self.out.append(self.bits & 0xFF)
        return bytes(self.out)


def compress(data: bytes) -> bytes:
    """``data`` compressed byte-for-byte like Go's ``lzw.NewWriter(w, lzw.LSB, 8)`` + one Write + Close."""
    w = _BitWriter()
    w.write(CLEAR, 9)
    if not data:
        w.write(EOF, 9)
        return w.finish()
    width, hi, overflow = 9, EOF, 1 << 9
    table: dict[int, int] = {}
    out, bits, nbits = w.out, w.bits, w.nbits
    it = iter(data)
    code = next(it)
    for x in it:
        key = (code << 8) | x
        hit = table.get(key)
        if hit is not None:
            code = hit
            continue
        # emit ``code`` at the current width (inlined _BitWriter.write: this is the hot loop)
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
        code = x
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == _MAX_CODE:
            bits |= CLEAR << nbits
            nbits += width
            width, hi, overflow = 9, EOF, 1 << 9
            table = {}
            continue
        table[key] = hi
    w.bits, w.nbits = bits, nbits
    # Close: the pending code, one more step of the code counter, then the end code.
    w.write(code, width)
    hi += 1
    if hi == overflow:
        width += 1
    if hi == _MAX_CODE:
        w.write(CLEAR, width)
        width = 9
    w.write(EOF, width)
    return w.finish()


def decompress(data: bytes, *, max_size: int = 40 << 20) -> bytes:
    """Inflate a Go ``compress/lzw`` (LSB, 8) stream.

    Raises :class:`GossipDecodeError` on an invalid code, a stream that ends before the end code, or
    when the output would exceed ``max_size`` bytes.
    """
    table: list[bytes] = [*_LITERALS, b"", b"", *([b""] * (_MAX_CODE + 1 - 258))]
    out: list[bytes] = []
    size = 0
    width, hi, overflow, last = 9, EOF, 1 << 9, -1
    bits = nbits = pos = 0
    n = len(data)
    while True:
        while nbits < width:
            if pos >= n:
                raise GossipDecodeError("lzw: unexpected end of data")
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & ((1 << width) - 1)
        bits >>= width
        nbits -= width
        if code == CLEAR:
            width, hi, overflow, last = 9, EOF, 1 << 9, -1
            continue
        if code == EOF:
            break
        if code < CLEAR or code < hi:
            entry = table[code]
        elif code == hi:
            if last < 0:
                entry = table[code]  # only reachable with a full table: the entry is the last one added
            else:
                prev = table[last]
                entry = prev + prev[:1]
        else:
            raise GossipDecodeError(f"lzw: invalid code {code}")
        if last >= 0:
            table[hi] = table[last] + entry[:1]
        size += len(entry)
        if size > max_size:
            raise GossipDecodeError(f"lzw: inflated data exceeds {max_size} bytes")
        out.append(entry)
        last = code
        hi += 1
        if hi >= overflow:
            if width == MAX_WIDTH:
                last = -1
                hi -= 1
            else:
                width += 1
                overflow <<= 1
    return b"".join(out)
