#!/usr/bin/env python3
"""Encode a raw disk as a fuzz input of the sparse-disk targets (see
crates/fuzzing/src/input.rs: `SparseDisk::encode` is the same function):
u32 size in sectors, then (u32 sector, u16 len, bytes) runs of non-zero
sectors, little-endian."""
import struct
import sys

SECTOR = 512
MAX_RUN = 127  # sectors per record, so that a length fits in a u16

def encode(image: bytes) -> bytes:
    sectors = -(-len(image) // SECTOR)
    out = bytearray(struct.pack("<I", sectors))
    zero = lambda s: not any(image[s * SECTOR:(s + 1) * SECTOR])
    i = 0
    while i < sectors:
        if zero(i):
            i += 1
            continue
        start = i
        while i < sectors and i - start < MAX_RUN and not zero(i):
            i += 1
        chunk = image[start * SECTOR:i * SECTOR]
        out += struct.pack("<IH", start, len(chunk)) + chunk
    return bytes(out)

if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        data = f.read()
    with open(sys.argv[2], "wb") as f:
        f.write(encode(data))
