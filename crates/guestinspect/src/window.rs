//! Views onto a disk: a [`Window`] is a sub-range (a partition, a logical
//! volume's linear segments) seen as a disk of its own, and a
//! [`CountingReader`] counts what inspection reads so that its cost can be
//! reported and benchmarked.

use diskformat::ReadAt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the window",
    )
}

/// One piece of a window: `len` bytes at `disk_offset` of the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub disk_offset: u64,
    pub len: u64,
}

/// A range of a parent disk, possibly made of several pieces (a linear LV
/// with several segments), read as one contiguous disk.
pub struct Window {
    disk: Arc<dyn ReadAt>,
    /// Pieces in logical order, with their logical start precomputed.
    pieces: Vec<(u64, Piece)>,
    len: u64,
}

impl Window {
    /// `len` bytes at `offset` of `disk`. Fails if the range is not inside
    /// the disk (a partition table pointing past the end).
    pub fn new(disk: Arc<dyn ReadAt>, offset: u64, len: u64) -> io::Result<Window> {
        Window::from_pieces(
            disk,
            &[Piece {
                disk_offset: offset,
                len,
            }],
        )
    }

    /// Pieces laid end to end. Each must lie inside the parent disk.
    pub fn from_pieces(disk: Arc<dyn ReadAt>, pieces: &[Piece]) -> io::Result<Window> {
        let mut out = Vec::with_capacity(pieces.len());
        let mut logical = 0u64;
        for p in pieces {
            let end = p.disk_offset.checked_add(p.len).ok_or_else(eof)?;
            if end > disk.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "range {}..{} lies beyond the end of the disk ({} bytes)",
                        p.disk_offset,
                        end,
                        disk.len()
                    ),
                ));
            }
            if p.len == 0 {
                continue;
            }
            out.push((logical, *p));
            logical = logical.checked_add(p.len).ok_or_else(eof)?;
        }
        Ok(Window {
            disk,
            pieces: out,
            len: logical,
        })
    }
}

impl ReadAt for Window {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(eof)?;
        if end > self.len {
            return Err(eof());
        }
        let mut done = 0usize;
        let mut pos = offset;
        // Pieces are few (one per LV segment); a linear scan is fine.
        for (start, piece) in &self.pieces {
            if done == buf.len() {
                break;
            }
            let piece_end = start + piece.len;
            if pos >= piece_end || pos < *start {
                continue;
            }
            let within = pos - start;
            let n = ((piece.len - within) as usize).min(buf.len() - done);
            self.disk
                .read_at(piece.disk_offset + within, &mut buf[done..done + n])?;
            done += n;
            pos += n as u64;
        }
        if done != buf.len() {
            return Err(eof());
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// Counts the bytes and calls that go through it.
pub struct CountingReader {
    inner: Arc<dyn ReadAt>,
    bytes: AtomicU64,
    reads: AtomicU64,
}

impl CountingReader {
    pub fn new(inner: Arc<dyn ReadAt>) -> CountingReader {
        CountingReader {
            inner,
            bytes: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }
    pub fn bytes_read(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    pub fn read_calls(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

impl ReadAt for CountingReader {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_at(offset, buf)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

/// Read `len` bytes at `offset` into a new buffer. Callers bound `len`
/// themselves; this only saves the boilerplate.
pub fn read_vec(disk: &dyn ReadAt, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    disk.read_at(offset, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskformat::ReadAt;

    struct Mem(Vec<u8>);
    impl ReadAt for Mem {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let s = offset as usize;
            let src = self.0.get(s..s + buf.len()).ok_or_else(eof)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
    }

    #[test]
    fn pieces_read_across_boundaries() {
        let disk: Arc<dyn ReadAt> = Arc::new(Mem((0..100u8).collect()));
        let w = Window::from_pieces(
            disk,
            &[
                Piece {
                    disk_offset: 50,
                    len: 10,
                },
                Piece {
                    disk_offset: 10,
                    len: 5,
                },
            ],
        )
        .unwrap();
        assert_eq!(w.len(), 15);
        let mut buf = [0u8; 6];
        w.read_at(7, &mut buf).unwrap();
        assert_eq!(buf, [57, 58, 59, 10, 11, 12]);
        assert!(w.read_at(12, &mut buf).is_err());
    }

    #[test]
    fn window_outside_disk_is_refused() {
        let disk: Arc<dyn ReadAt> = Arc::new(Mem(vec![0; 10]));
        assert!(Window::new(disk.clone(), 5, 6).is_err());
        assert!(Window::new(disk, u64::MAX, 2).is_err());
    }
}
