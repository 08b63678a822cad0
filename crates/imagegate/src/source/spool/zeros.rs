//! The source's all-zero [`ZERO_CHUNK`]s, found once on the way in.
//!
//! They serve twice: containers whose guest bytes are the file's bytes (raw,
//! fixed VHD) skip them without reading ([`diskformat::ReadAt::extent_hint`]),
//! and whatever is written to the spool file leaves them as holes (the file
//! is sparse, so they read back as zeros).

use super::sync::Mutex;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use diskformat::is_zero;

/// Granularity of zero detection (the qcow2 cluster size we write).
pub const ZERO_CHUNK: usize = 64 << 10;
/// Sources up to this many [`ZERO_CHUNK`]s (1 TiB, a 2 MiB bitmap) have
/// their zero chunks tracked; larger ones are treated as all data.
const MAX_TRACKED_CHUNKS: u64 = 1 << 24;

/// Bit `c`: chunk `[c, c + 1) × ZERO_CHUNK` arrived and is all zeros.
pub(super) struct ZeroMap {
    bits: Mutex<Vec<u64>>,
}

impl ZeroMap {
    pub(super) fn new(len: u64) -> ZeroMap {
        let chunks = len / ZERO_CHUNK as u64;
        ZeroMap {
            bits: Mutex::new(if chunks <= MAX_TRACKED_CHUNKS {
                vec![0u64; chunks.div_ceil(64) as usize]
            } else {
                Vec::new()
            }),
        }
    }

    fn lock(&self) -> super::sync::MutexGuard<'_, Vec<u64>> {
        self.bits.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn mark(&self, chunks: &[u64]) {
        if chunks.is_empty() {
            return;
        }
        let mut bits = self.lock();
        for &c in chunks {
            if let Some(word) = bits.get_mut((c / 64) as usize) {
                *word |= 1 << (c % 64);
            }
        }
    }

    /// The run of chunks starting with the one holding `offset` that are all
    /// zero, or all not known to be zero, up to `limit`: (run end, zero).
    pub(super) fn run(&self, offset: u64, limit: u64) -> (u64, bool) {
        let bits = self.lock();
        if bits.is_empty() {
            return (limit, false);
        }
        let z = ZERO_CHUNK as u64;
        let is_zero_chunk = |c: u64| {
            bits.get((c / 64) as usize)
                .is_some_and(|w| w & (1 << (c % 64)) != 0)
        };
        let first = offset / z;
        let zero = is_zero_chunk(first);
        let mut c = first + 1;
        while c * z < limit && is_zero_chunk(c) == zero {
            c += 1;
        }
        ((c * z).min(limit), zero)
    }

    /// Writes `data` (source bytes at `at`) to `file` at the same offset,
    /// leaving the known zero chunks inside it as holes. A skipped range reads
    /// as zeros: the file is new and sparse, or a resumed spool whose bytes
    /// were written by an earlier process from the same version of the source
    /// (the sidecar's validator matched), so they are these same zeros.
    pub(super) fn write_skipping(&self, file: &File, at: u64, data: &[u8]) -> io::Result<()> {
        let end = at + data.len() as u64;
        let mut pos = at;
        let mut run_start = at;
        while pos < end {
            let (run_end, zero) = self.run(pos, end);
            // A zero run only counts where it covers whole chunks: a chunk
            // marked zero is zero throughout, so any part of it is too.
            if zero {
                if run_start < pos {
                    write_range(file, at, data, run_start, pos)?;
                }
                run_start = run_end;
            }
            pos = run_end;
        }
        if run_start < end {
            write_range(file, at, data, run_start, end)?;
        }
        Ok(())
    }
}

fn write_range(file: &File, at: u64, data: &[u8], from: u64, to: u64) -> io::Result<()> {
    file.write_all_at(&data[(from - at) as usize..(to - at) as usize], from)
}

/// The pieces of `[at, at + len)` cut at [`ZERO_CHUNK`] boundaries:
/// (start within the buffer, length).
fn pieces(at: u64, len: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut i = 0usize;
    std::iter::from_fn(move || {
        if i >= len {
            return None;
        }
        let abs = at + i as u64;
        let to_boundary = ZERO_CHUNK - (abs % ZERO_CHUNK as u64) as usize;
        let n = to_boundary.min(len - i);
        let piece = (i, n);
        i += n;
        Some(piece)
    })
}

/// Follows the stream across network chunks and finds its all-zero
/// [`ZERO_CHUNK`]s, including those split between two network chunks.
pub(super) struct ZeroScan {
    /// Every byte seen so far of the zero chunk being crossed is zero (false
    /// when the stream began inside it: the bytes before are not known).
    all_zero: bool,
}

impl ZeroScan {
    pub(super) fn starting_at(pos: u64) -> ZeroScan {
        ZeroScan {
            all_zero: pos.is_multiple_of(ZERO_CHUNK as u64),
        }
    }

    /// The indices of the zero chunks that `chunk` (source bytes at `at`,
    /// continuing the stream) completes.
    pub(super) fn scan(&mut self, at: u64, chunk: &[u8]) -> Vec<u64> {
        let mut found = Vec::new();
        for (i, n) in pieces(at, chunk.len()) {
            let abs = at + i as u64;
            if abs.is_multiple_of(ZERO_CHUNK as u64) {
                self.all_zero = true;
            }
            self.all_zero = self.all_zero && is_zero(&chunk[i..i + n]);
            let ends_chunk = (abs + n as u64).is_multiple_of(ZERO_CHUNK as u64);
            if ends_chunk && self.all_zero {
                found.push(abs / ZERO_CHUNK as u64);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_follows_chunks_across_network_chunks() {
        let z = ZERO_CHUNK;
        // Zero chunk 0 split 1000 | rest; chunk 1 whole inside the second
        // network chunk; chunk 2 has data.
        let mut data = vec![0u8; 3 * z];
        data[2 * z + 9] = 1;
        let mut scan = ZeroScan::starting_at(0);
        assert!(scan.scan(0, &data[..1000]).is_empty());
        assert_eq!(scan.scan(1000, &data[1000..]), vec![0, 1]);
        // A stream resumed inside a chunk cannot vouch for its start.
        let mut resumed = ZeroScan::starting_at(10);
        assert!(resumed.scan(10, &data[10..z]).is_empty());
        assert_eq!(resumed.scan(z as u64, &data[z..2 * z]), vec![1]);
    }

    #[test]
    fn writes_leave_zero_chunks_as_holes() {
        use std::os::unix::fs::MetadataExt;
        let z = ZERO_CHUNK;
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let len = 64 * z;
        f.set_len(len as u64).unwrap();
        let mut data = vec![0u8; len];
        data[5] = 1;
        data[len - 1] = 2;
        let map = ZeroMap::new(len as u64);
        let mut scan = ZeroScan::starting_at(0);
        map.mark(&scan.scan(0, &data));
        // Written unaligned, in two pieces.
        let cut = 3 * z + 17;
        map.write_skipping(&f, 0, &data[..cut]).unwrap();
        map.write_skipping(&f, cut as u64, &data[cut..]).unwrap();
        let mut back = vec![7u8; len];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data);
        // Two 64 KiB chunks hold data; the rest is holes.
        let allocated = f.metadata().unwrap().blocks() * 512;
        assert!(allocated <= 4 * z as u64, "{allocated} bytes allocated");
        assert_eq!(map.run(0, len as u64), (z as u64, false));
        assert_eq!(map.run(z as u64 + 5, len as u64), (63 * z as u64, true));
    }
}
