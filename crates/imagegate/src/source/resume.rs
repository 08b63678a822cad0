//! The resume sidecar: what a spool left in the scratch folder holds (source,
//! version, length, how far it is complete, and the boot it was written in),
//! so that a later process can continue it with a ranged request instead of
//! downloading again. Best effort throughout: a missing or stale sidecar
//! only costs a longer download.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::remote::Validator;

/// The spool's file in the scratch folder.
pub(super) const SPOOL_NAME: &str = "source.spool";
const SIDECAR_NAME: &str = "source.spool.json";

/// What a spool in the scratch folder holds, for a later process.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Sidecar {
    version: u32,
    boot_id: String,
    /// [`super::remote::Remote::identity`] of the source.
    pub source: String,
    pub total: u64,
    pub validator: Validator,
    /// The spool file is complete up to here.
    pub frontier: u64,
}

impl Sidecar {
    /// A sidecar for this boot.
    pub fn new(source: String, total: u64, validator: Validator, frontier: u64) -> Sidecar {
        Sidecar {
            version: 1,
            boot_id: boot_id(),
            source,
            total,
            validator,
            frontier,
        }
    }

    /// The sidecar of an earlier process's spool of the same source, if it
    /// can be continued: same boot (the page cache of an earlier boot may
    /// not have reached the disk), a validator to resume against, a
    /// frontier inside the object, and the spool file there at full length.
    pub fn previous(scratch: &Path, source: &str) -> Option<Sidecar> {
        let boot = boot_id();
        let spool_path = scratch.join(SPOOL_NAME);
        read_sidecar(scratch).filter(|s| {
            s.version == 1
                && s.source == source
                && !boot.is_empty()
                && s.boot_id == boot
                && !s.validator.is_empty()
                && s.frontier > 0
                && s.frontier <= s.total
                && std::fs::metadata(&spool_path).is_ok_and(|m| m.is_file() && m.len() == s.total)
        })
    }

    /// Records `frontier` (best effort: a stale sidecar only costs a longer
    /// re-download).
    pub fn record(&self, scratch: &Path, frontier: u64) {
        let mut sc = self.clone();
        sc.frontier = frontier;
        let _ = write_sidecar(scratch, &sc);
    }

    /// The spool keeper's checkpoint: records each frontier it reaches.
    /// Without a validator a later process could not tell whether the
    /// object changed: nothing is recorded then, and nothing resumed.
    pub fn checkpoint(&self, scratch: &Path) -> super::spool::Checkpoint {
        if self.validator.is_empty() {
            return Box::new(|_| {});
        }
        let (sc, scratch) = (self.clone(), scratch.to_path_buf());
        Box::new(move |frontier| sc.record(&scratch, frontier))
    }
}

/// Forgets any spool of the scratch folder (its bytes belong to another
/// version, or the file was just truncated).
pub(super) fn remove(scratch: &Path) {
    let _ = std::fs::remove_file(scratch.join(SIDECAR_NAME));
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn read_sidecar(scratch: &Path) -> Option<Sidecar> {
    use std::io::Read;
    let f = File::open(scratch.join(SIDECAR_NAME)).ok()?;
    let mut text = String::new();
    // Our own small file; still, never read an unbounded amount.
    f.take(16 << 10).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_sidecar(scratch: &Path, s: &Sidecar) -> std::io::Result<()> {
    // A private temporary name per write: the writer thread and the task
    // may both write; each rename installs one whole file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = scratch.join(format!("{SIDECAR_NAME}.{}.{n}.tmp", std::process::id()));
    crate::private_fs::write(&tmp, &serde_json::to_vec(s).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, scratch.join(SIDECAR_NAME))
}
