//! Room for an export. An export writes nothing under `data_dir` itself (it
//! reads the stored qcow2 and streams to the bucket), but a `cos_root`
//! folder on the data volume makes every exported byte a byte of the volume
//! that also holds the catalog and the stored images: then the free-space
//! reserve (`limits.min_free_space`) applies to the export as it does to an
//! import, checked before each object and every [`RESERVE_CHECK_EVERY`]
//! bytes written (holes cost nothing and are not counted).
//!
//! A write that meets a full disk anyway (ENOSPC, EDQUOT) is the bucket's
//! being full ([`StorageRefusal::TargetFull`]); the writer is aborted and
//! its temporary file removed by the caller (see `run`).

use std::io;
use std::path::PathBuf;

use diskformat::export::ExportSink;

use super::target::{ObjectWriter, Target};
use crate::config::Config;
use crate::storage::{check_free_space, StorageRefusal};

/// The reserve is checked after every this many bytes written.
pub const RESERVE_CHECK_EVERY: u64 = 16 << 20;

/// The reserve an export to `target` must keep on the data volume: `None`
/// when the target is not on that volume (an S3 store, or a `cos_root` on
/// another file system) or there is no reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserve {
    pub volume: PathBuf,
    pub bytes: u64,
}

impl Reserve {
    pub fn for_target(config: &Config, target: &Target) -> Option<Reserve> {
        let Target::Folder { root } = target else {
            return None;
        };
        let bytes = config.limits.min_free_space;
        (bytes > 0 && crate::storage::same_volume(root, &config.data_dir)).then(|| Reserve {
            volume: config.data_dir.clone(),
            bytes,
        })
    }

    /// Whether `incoming` more bytes leave the reserve free.
    pub fn check(&self, incoming: u64) -> Result<(), StorageRefusal> {
        check_free_space(&self.volume, self.bytes, incoming)
    }

    /// `writer`, stopping with the refusal (inside an `io::Error`, see
    /// `storage::refusal_in`) once the reserve is reached.
    pub fn guard(self, writer: Box<dyn ObjectWriter>) -> Box<dyn ObjectWriter> {
        Box::new(ReserveGuard {
            inner: writer,
            reserve: self,
            written: 0,
            next_check: 0,
        })
    }
}

struct ReserveGuard {
    inner: Box<dyn ObjectWriter>,
    reserve: Reserve,
    written: u64,
    next_check: u64,
}

impl ExportSink for ReserveGuard {
    fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        if self.written >= self.next_check {
            self.next_check = self.written + RESERVE_CHECK_EVERY;
            self.reserve
                .check(data.len() as u64)
                .map_err(io::Error::other)?;
        }
        self.written += data.len() as u64;
        self.inner.write_all(data)
    }

    fn write_zeros(&mut self, n: u64) -> io::Result<()> {
        self.inner.write_zeros(n)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.inner.finish()
    }
}

impl ObjectWriter for ReserveGuard {
    fn publish(self: Box<Self>) -> io::Result<()> {
        self.inner.publish()
    }

    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

/// What a failed write of an object means: the refusal a guard carried, a
/// full bucket, or `None` (another I/O failure).
pub fn refusal_of(e: &io::Error) -> Option<StorageRefusal> {
    if let Some(r) = crate::storage::refusal_in(e) {
        return Some(r);
    }
    crate::storage::is_disk_full(e).then_some(StorageRefusal::TargetFull)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// Counts the bytes written to it; zeros are holes, as in a sparse file.
    struct Recorder(Arc<Mutex<u64>>);

    impl ExportSink for Recorder {
        fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
            *self.0.lock().unwrap() += data.len() as u64;
            Ok(())
        }
        fn write_zeros(&mut self, _: u64) -> io::Result<()> {
            Ok(())
        }
    }

    impl ObjectWriter for Recorder {
        fn publish(self: Box<Self>) -> io::Result<()> {
            Ok(())
        }
        fn abort(self: Box<Self>) {}
    }

    fn config(data_dir: &Path, reserve: u64) -> Config {
        let mut c = Config {
            data_dir: data_dir.to_path_buf(),
            ..Default::default()
        };
        c.limits.min_free_space = reserve;
        c
    }

    #[test]
    fn the_reserve_applies_only_to_a_folder_on_the_data_volume() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cos");
        std::fs::create_dir(&root).unwrap();
        let folder = Target::Folder { root: root.clone() };
        let r = Reserve::for_target(&config(dir.path(), 5), &folder).unwrap();
        assert_eq!(r.bytes, 5);
        assert_eq!(Reserve::for_target(&config(dir.path(), 0), &folder), None);
        let elsewhere = Target::Folder {
            root: PathBuf::from("/proc"),
        };
        assert_eq!(
            Reserve::for_target(&config(dir.path(), 5), &elsewhere),
            None
        );
    }

    #[test]
    fn a_guard_stops_at_the_reserve_and_counts_no_holes() {
        let dir = tempfile::tempdir().unwrap();
        let free = crate::storage::free_space(dir.path()).unwrap();
        let seen = Arc::new(Mutex::new(0));
        // A reserve the volume already misses: the first byte is refused.
        let tight = Reserve {
            volume: dir.path().to_path_buf(),
            bytes: free + (1 << 40),
        };
        let mut w = tight.guard(Box::new(Recorder(seen.clone())));
        w.write_zeros(1 << 40).unwrap();
        let e = w.write_all(b"x").unwrap_err();
        assert_eq!(
            refusal_of(&e).map(|r| r.code().as_str()),
            Some("StorageReserveReached")
        );
        assert_eq!(*seen.lock().unwrap(), 0);
        // A reserve the volume keeps: everything passes.
        let easy = Reserve {
            volume: dir.path().to_path_buf(),
            bytes: 1,
        };
        let mut w = easy.guard(Box::new(Recorder(seen.clone())));
        w.write_all(&[1u8; 4096]).unwrap();
        assert_eq!(*seen.lock().unwrap(), 4096);
    }

    #[test]
    fn a_full_disk_is_the_bucket_being_full() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(refusal_of(&e), Some(StorageRefusal::TargetFull));
        assert_eq!(refusal_of(&io::Error::from_raw_os_error(libc::EIO)), None);
    }
}
