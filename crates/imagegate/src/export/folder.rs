//! The folder target's objects: written to a temporary file outside every
//! bucket, synced, and renamed into the bucket last (see `target`).
//!
//! The bytes bypass the page cache (`O_DIRECT`, through `directio`'s
//! appender, where the file system allows it), as a stored image's do. An
//! export writes gigabytes that nothing reads back soon; through the cache
//! the CPU copies every byte into cache pages and the final `fsync` then
//! waits for all of them. On these VMs that copy is also the slowest part
//! when the memory it fills has been idle (writing 1 GiB into the page
//! cache took 0.25 s into just-freed memory and 0.75 to 0.97 s into
//! long-free memory), which a direct write never touches. Long zero runs
//! stay holes, as in diskformat's `FileSink`.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use diskformat::export::ExportSink;

use super::target::ObjectWriter;
use crate::directio::{Appender, DualFile, ALIGN};

/// Zero runs from this length on become holes; shorter ones are written
/// (a hole must start and end on an `ALIGN` boundary, and a small one
/// saves nothing).
const MIN_HOLE: u64 = 1 << 20;

/// Zeros to append from.
static ZEROS: [u8; 64 << 10] = [0u8; 64 << 10];

/// One object in the making.
pub struct FolderWriter {
    sink: Option<DirectSink>,
    partial: PathBuf,
    bucket_dir: PathBuf,
    target: PathBuf,
}

impl FolderWriter {
    /// Creates the temporary file `partial` (which must not exist) for the
    /// object `key` of the bucket folder `bucket_dir`.
    pub fn create(partial: PathBuf, bucket_dir: PathBuf, key: &str) -> io::Result<FolderWriter> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&partial)?;
        let sink = match DirectSink::start(DualFile::new(&partial, file)) {
            Ok(sink) => sink,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        Ok(FolderWriter {
            sink: Some(sink),
            partial,
            target: bucket_dir.join(key),
            bucket_dir,
        })
    }

    fn sink(&mut self) -> io::Result<&mut DirectSink> {
        self.sink
            .as_mut()
            .ok_or_else(|| io::Error::other("object already closed"))
    }

    /// Makes the temporary file durable and renames it into the bucket;
    /// the caller removes the temporary file if this fails.
    fn sync_and_rename(&self, file: File) -> io::Result<()> {
        file.sync_all()?;
        drop(file);
        // The bucket folder must still be a folder (not a link placed since
        // the check): the object goes nowhere else.
        let meta = std::fs::symlink_metadata(&self.bucket_dir)?;
        if !meta.is_dir() {
            return Err(io::Error::other("the bucket folder is gone"));
        }
        std::fs::rename(&self.partial, &self.target)
    }
}

impl ExportSink for FolderWriter {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.sink()?.write_all(data)
    }
    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        self.sink()?.write_zeros(n)
    }
    fn finish(&mut self) -> io::Result<()> {
        self.sink()?.finish()
    }
}

impl ObjectWriter for FolderWriter {
    fn publish(mut self: Box<Self>) -> io::Result<()> {
        let file = self
            .sink
            .take()
            .and_then(DirectSink::into_file)
            .ok_or_else(|| io::Error::other("object not finished"))?;
        // Whatever stops the publish short (a full disk at the sync, the
        // bucket gone), the temporary file goes with it.
        if let Err(e) = self.sync_and_rename(file) {
            let _ = std::fs::remove_file(&self.partial);
            return Err(e);
        }
        // Published: a failure to sync the folder is reported (the task
        // fails and removes the object, which it marked published first).
        File::open(&self.bucket_dir)?.sync_all()
    }

    fn abort(mut self: Box<Self>) {
        self.sink.take();
        let _ = std::fs::remove_file(&self.partial);
    }
}

impl Drop for FolderWriter {
    fn drop(&mut self) {
        if self.sink.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// An append-only file written by a `directio::Appender`, with holes for
/// long zero runs. Writing, then `finish`, then `into_file`.
struct DirectSink {
    /// While writing.
    appender: Option<Appender>,
    /// After `finish`.
    file: Option<File>,
    /// Logical length so far (holes included).
    len: u64,
}

impl DirectSink {
    fn start(file: DualFile) -> io::Result<DirectSink> {
        Ok(DirectSink {
            appender: Some(Appender::start(file, 0)?),
            file: None,
            len: 0,
        })
    }

    fn appender(&mut self) -> io::Result<&mut Appender> {
        self.appender
            .as_mut()
            .ok_or_else(|| io::Error::other("object already finished"))
    }

    fn append_zeros(&mut self, mut n: u64) -> io::Result<()> {
        let appender = self.appender()?;
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            appender.append(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    /// The finished file.
    fn into_file(self) -> Option<File> {
        self.file
    }
}

impl ExportSink for DirectSink {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.appender()?.append(data)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        if n < MIN_HOLE {
            self.append_zeros(n)?;
        } else {
            // Zeros up to a block boundary, whole blocks as a hole, then
            // the few zeros after the last whole block.
            let align = ALIGN as u64;
            let lead = (align - self.len % align) % align;
            let hole = (n - lead) / align * align;
            self.append_zeros(lead)?;
            self.appender()?.skip(hole)?;
            self.append_zeros(n - lead - hole)?;
        }
        self.len = self.len.saturating_add(n);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let appender = self
            .appender
            .take()
            .ok_or_else(|| io::Error::other("object already finished"))?;
        let file = appender.finish()?.into_buffered();
        // A hole at the end is length without a write.
        file.set_len(self.len)?;
        self.file = Some(file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Data at odd sizes and offsets, short zero runs, holes at odd
    /// offsets and at the end: the file reads back exactly, with the
    /// holes unallocated.
    #[test]
    fn a_direct_sink_writes_exactly_its_bytes_and_leaves_holes() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path().join("bucket-1250000000");
        std::fs::create_dir(&bucket).unwrap();
        let partial = dir.path().join("t.part");
        let mut w =
            Box::new(FolderWriter::create(partial.clone(), bucket.clone(), "o.raw").unwrap());
        let mut expected = Vec::new();
        let data = |n: usize, seed: u8| -> Vec<u8> {
            (0..n)
                .map(|i| ((i as u8).wrapping_mul(7) ^ seed) | 1)
                .collect()
        };
        for (bytes, zeros) in [
            (data(1000, 1), 100u64),
            (data(5 << 20, 2), 3 << 20),
            (data(4097, 3), 70_000),
            (data(9 << 20, 4), (2 << 20) + 5),
            (data(1, 5), 8 << 20),
        ] {
            w.write_all(&bytes).unwrap();
            expected.extend_from_slice(&bytes);
            w.write_zeros(zeros).unwrap();
            expected.resize(expected.len() + zeros as usize, 0);
        }
        w.finish().unwrap();
        w.publish().unwrap();
        assert!(!partial.exists());
        let out = bucket.join("o.raw");
        let mut got = Vec::new();
        File::open(&out).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "contents differ");
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&out).unwrap().blocks() * 512;
        assert!(
            allocated < expected.len() as u64 - (10 << 20),
            "holes were written: {allocated} of {} bytes allocated",
            expected.len()
        );
    }

    #[test]
    fn an_aborted_object_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let partial = dir.path().join("t.part");
        let mut w =
            Box::new(FolderWriter::create(partial.clone(), dir.path().into(), "o").unwrap());
        w.write_all(&[7u8; 3 << 20]).unwrap();
        w.abort();
        assert!(!partial.exists());
        assert!(!dir.path().join("o").exists());
    }
}
