//! Where an export goes: an append-only byte stream.
//!
//! Contract: the writers call `write_all` and `write_zeros` in file order
//! and `finish` once at the end; nothing is ever rewritten. A sink that can
//! seek ([`FileSink`]) turns long zero runs into holes; a strictly
//! sequential one ([`SequentialSink`], or an S3 multipart upload the caller
//! implements) writes the zeros. Threat model: the bytes come from our own
//! writers; sizes are bounded by the disk's virtual size, which the reader
//! already checked against its limits.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// 64 KiB of zeros, for sinks that must write them out.
static ZEROS: [u8; 64 << 10] = [0u8; 64 << 10];

/// An append-only output.
pub trait ExportSink {
    /// Append `data`.
    fn write_all(&mut self, data: &[u8]) -> io::Result<()>;

    /// Append `n` zero bytes. The default writes them; a sink that can
    /// leave a hole overrides it.
    fn write_zeros(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.write_all(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Called once after the last byte (flush, fix the length). Not
    /// durability: the caller syncs and renames.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<T: ExportSink + ?Sized> ExportSink for &mut T {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).write_all(data)
    }
    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        (**self).write_zeros(n)
    }
    fn finish(&mut self) -> io::Result<()> {
        (**self).finish()
    }
}

/// Any `Write`, strictly sequentially (zeros are written out).
pub struct SequentialSink<W: Write>(pub W);

impl<W: Write> ExportSink for SequentialSink<W> {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Small writes are gathered up to this size before a `write` call.
const BUFFER: usize = 1 << 20;
/// Zero runs from this length on become holes (shorter ones are written:
/// a hole smaller than a file-system block saves nothing).
const MIN_HOLE: u64 = 64 << 10;

/// A local file, sparse: zero runs of 64 KiB and more are left as holes
/// (seek forward), and `finish` sets the length so a trailing hole counts.
pub struct FileSink {
    file: File,
    buf: Vec<u8>,
    /// Logical length written so far.
    len: u64,
}

impl FileSink {
    /// Takes a file opened for writing and truncates it to zero: a hole only
    /// reads as zeros in a file that held nothing there before.
    pub fn new(mut file: File) -> io::Result<Self> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        Ok(FileSink {
            file,
            buf: Vec::with_capacity(BUFFER),
            len: 0,
        })
    }

    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<std::path::Path>) -> io::Result<Self> {
        Self::new(File::create(path)?)
    }

    /// The file, after `finish`.
    pub fn into_file(self) -> File {
        self.file
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

impl ExportSink for FileSink {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.buf.len() + data.len() > BUFFER {
            self.flush_buf()?;
        }
        if data.len() >= BUFFER {
            // Large writes go straight to the file: no copy.
            self.file.write_all(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        if n < MIN_HOLE {
            self.buf.resize(self.buf.len() + n as usize, 0);
            self.len += n;
            if self.buf.len() >= BUFFER {
                self.flush_buf()?;
            }
            return Ok(());
        }
        self.flush_buf()?;
        let skip = i64::try_from(n).map_err(|_| io::Error::other("hole too large"))?;
        self.file.seek(SeekFrom::Current(skip))?;
        self.len += n;
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.file.set_len(self.len)?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_leaves_holes_and_keeps_the_length() {
        let f = tempfile::tempfile().unwrap();
        let mut s = FileSink::new(f).unwrap();
        s.write_all(b"abc").unwrap();
        s.write_zeros(100).unwrap();
        s.write_all(&[7u8; 3 << 20]).unwrap();
        s.write_zeros(5 << 20).unwrap();
        s.finish().unwrap();
        let mut f = s.into_file();
        let mut all = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        std::io::Read::read_to_end(&mut f, &mut all).unwrap();
        assert_eq!(all.len(), 3 + 100 + (3 << 20) + (5 << 20));
        assert_eq!(&all[..3], b"abc");
        assert!(all[3..103].iter().all(|&b| b == 0));
        assert!(all[103..103 + (3 << 20)].iter().all(|&b| b == 7));
        assert!(all[103 + (3 << 20)..].iter().all(|&b| b == 0));
    }

    #[test]
    fn sequential_sink_writes_the_zeros() {
        let mut s = SequentialSink(Vec::new());
        s.write_all(b"x").unwrap();
        s.write_zeros(70_000).unwrap();
        s.finish().unwrap();
        assert_eq!(s.0.len(), 70_001);
        assert!(s.0[1..].iter().all(|&b| b == 0));
    }
}
