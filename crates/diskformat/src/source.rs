//! Random access to the bytes of a container file.

use std::io;

/// Positioned reads from an image file, a file that is still arriving, or a
/// guest disk. `read_at` fills the whole buffer or fails; reading past
/// `len()` is `UnexpectedEof`. A source that is still arriving blocks until
/// the range is there (or the transfer fails).
pub trait ReadAt: Send + Sync {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Total length in bytes (known up front, even while arriving).
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the source knows about `[offset, offset + max_len)` without
    /// reading it: a leading run (at least 1 byte, at most `max_len`, inside
    /// the source) that reads as all zeros (`Zero`) or may hold data
    /// (`Data`). A source that already found the zeros (a download spool
    /// that left them as holes) says so, and containers whose guest bytes are
    /// the file's bytes (raw, fixed VHD) skip them without reading. The
    /// default knows nothing: all of it may be data.
    fn extent_hint(&self, offset: u64, max_len: u64) -> io::Result<Hint> {
        Ok(Hint {
            len: max_len.min(self.len().saturating_sub(offset)).max(1),
            zero: false,
        })
    }
}

/// See [`ReadAt::extent_hint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    pub len: u64,
    pub zero: bool,
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn extent_hint(&self, offset: u64, max_len: u64) -> io::Result<Hint> {
        (**self).extent_hint(offset, max_len)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn extent_hint(&self, offset: u64, max_len: u64) -> io::Result<Hint> {
        (**self).extent_hint(offset, max_len)
    }
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the image",
    )
}

/// An image held in memory (tests, fuzzing, small headers).
pub struct SliceSource<'a>(pub &'a [u8]);

impl ReadAt for SliceSource<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = self.0.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

/// A complete local file.
pub struct FileSource {
    file: std::fs::File,
    len: u64,
}

impl FileSource {
    pub fn open(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }

    pub fn from_file(file: std::fs::File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }
}

impl ReadAt for FileSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let end = offset.checked_add(buf.len() as u64).ok_or_else(eof)?;
        if end > self.len {
            return Err(eof());
        }
        self.file.read_exact_at(buf, offset)
    }
    fn len(&self) -> u64 {
        self.len
    }
}

/// A source whose last bytes were fetched ahead of the rest (e.g. with one
/// range request before the body streams in order). Detection and the
/// footer-based formats (fixed VHD, streamOptimized VMDK) read the end of
/// the file first; served from here, they need not wait for a download to
/// finish before conversion can start. Reads that lie wholly inside the
/// prefetched tail are answered from it; all others go to `inner`.
pub struct PrefetchedTail<R> {
    inner: R,
    tail_start: u64,
    tail: Vec<u8>,
}

impl<R: ReadAt> PrefetchedTail<R> {
    /// `tail` must be the last `tail.len()` bytes of `inner` (the caller
    /// fetched them from the same object version, e.g. with `If-Match`).
    pub fn new(inner: R, tail: Vec<u8>) -> io::Result<Self> {
        let tail_start = inner.len().checked_sub(tail.len() as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the prefetched tail is longer than the image",
            )
        })?;
        Ok(PrefetchedTail {
            inner,
            tail_start,
            tail,
        })
    }
}

impl<R: ReadAt> ReadAt for PrefetchedTail<R> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset >= self.tail_start {
            return SliceSource(&self.tail).read_at(offset - self.tail_start, buf);
        }
        self.inner.read_at(offset, buf)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn extent_hint(&self, offset: u64, max_len: u64) -> io::Result<Hint> {
        self.inner.extent_hint(offset, max_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose bytes past `frontier` have "not arrived": reading
    /// them fails, the way a spool would block.
    struct Arriving<'a>(&'a [u8], u64);

    impl ReadAt for Arriving<'_> {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            if offset + buf.len() as u64 > self.1 {
                return Err(io::Error::other("not arrived yet"));
            }
            SliceSource(self.0).read_at(offset, buf)
        }
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
    }

    #[test]
    fn tail_reads_do_not_touch_the_inner_source() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let tail = data[200_000 - 65536..].to_vec();
        let src = PrefetchedTail::new(Arriving(&data, 1000), tail).unwrap();
        let mut b = [0u8; 512];
        src.read_at(200_000 - 512, &mut b).unwrap();
        assert_eq!(&b[..], &data[200_000 - 512..]);
        src.read_at(0, &mut b).unwrap();
        assert_eq!(&b[..], &data[..512]);
        // Straddling the tail start goes to the inner source (not arrived).
        assert!(src.read_at(200_000 - 65536 - 10, &mut b).is_err());
        assert!(src.read_at(200_000 - 100, &mut b).is_err(), "past the end");
        assert!(PrefetchedTail::new(Arriving(&data, 0), vec![0; 300_000]).is_err());
        // Detection reads only the head and the tail.
        let src =
            PrefetchedTail::new(Arriving(&data, 65536), data[200_000 - 65536..].to_vec()).unwrap();
        assert!(crate::detect(&src).is_ok());
    }
}
