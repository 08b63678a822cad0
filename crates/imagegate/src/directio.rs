//! Large sequential file writes that bypass the page cache.
//!
//! An import writes gigabytes once and does not read them back soon; through
//! the page cache every byte is copied by the CPU into cache pages (1–3 s of
//! system time per GiB on a small VM, measured with `dd`), and the final
//! `fsync` then waits for all of it. With `O_DIRECT` the device takes the
//! bytes straight from our buffer (0.3 s of system time per GiB), and the
//! writes run on their own thread, beside decoding and hashing.
//!
//! `O_DIRECT` needs the file offset, the length and the memory address
//! aligned to the logical block size; [`ALIGN`] (4 KiB) covers the common
//! ones. A write that is not aligned, or a file system that refuses
//! `O_DIRECT` (tmpfs), goes through the page cache instead: the result is
//! the same bytes either way. Bytes written directly never share a page with
//! bytes written through the cache (aligned ranges cover whole pages), so
//! the two paths never see each other's stale data.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Alignment of memory, offsets and lengths for `O_DIRECT`.
pub const ALIGN: usize = 4096;

/// A byte buffer whose data starts on an [`ALIGN`] boundary.
pub struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
    cap: usize,
}

impl AlignedBuf {
    pub fn with_capacity(cap: usize) -> AlignedBuf {
        let mem = vec![0u8; cap + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf {
            mem,
            start,
            len: 0,
            cap,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Copies as much of `data` as fits; returns how much that was.
    pub fn extend(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.cap - self.len);
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }
}

/// A file opened twice: through the page cache, and (when the file system
/// allows it) with `O_DIRECT`.
pub struct DualFile {
    buffered: File,
    direct: Option<File>,
}

impl DualFile {
    /// `buffered` must be open for writing at `path`.
    pub fn new(path: &Path, buffered: File) -> DualFile {
        let direct = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        DualFile { buffered, direct }
    }

    /// Writes `data` at `offset`, directly when everything is aligned.
    pub fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let aligned = offset.is_multiple_of(ALIGN as u64)
            && data.len().is_multiple_of(ALIGN)
            && (data.as_ptr() as usize).is_multiple_of(ALIGN);
        if let (true, Some(direct)) = (aligned, &self.direct) {
            match direct.write_all_at(data, offset) {
                Ok(()) => return Ok(()),
                // Refused after all (a block size larger than ALIGN, a file
                // system that opens but cannot write O_DIRECT): stop trying.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(e),
            }
        }
        self.buffered.write_all_at(data, offset)
    }

    pub fn buffered(&self) -> &File {
        &self.buffered
    }

    /// The page-cache handle, to sync, size or rename the file.
    pub fn into_buffered(self) -> File {
        self.buffered
    }
}

/// Runs `fdatasync` on a file whenever nudged (at most one pending).
struct Syncer {
    tx: Option<SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Syncer {
    fn start(file: &File) -> io::Result<Syncer> {
        let file = file.try_clone()?;
        let (tx, rx) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("blob-sync".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    file.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Syncer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn nudge(&self) {
        if let Some(tx) = &self.tx {
            // Full: a sync is already due, which covers these bytes too.
            let _ = tx.try_send(());
        }
    }

    /// Waits for the syncs in flight; their error, if any.
    fn finish(mut self) -> io::Result<()> {
        self.tx.take();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the blob sync thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Appends at increasing offsets from a writer thread: `append` copies into
/// an aligned buffer and hands full buffers over (two in flight, recycled),
/// so the caller overlaps its own work with the device.
pub struct Appender {
    cur: AlignedBuf,
    /// File offset of `cur`'s first byte.
    cur_offset: u64,
    tx: Option<SyncSender<(u64, AlignedBuf)>>,
    back: Receiver<AlignedBuf>,
    spare: usize,
    thread: Option<std::thread::JoinHandle<io::Result<DualFile>>>,
}

/// Size of each appender buffer.
pub const APPEND_BUF: usize = 4 << 20;
/// Buffers queued to the writer thread: 24 MiB, so that the converter goes
/// on while a VM's disk stalls for a moment (a flush, the host's throttle);
/// measured against 2 (8 MiB), imports whose download and disk take about
/// as long (raw, VHDX) finished 0.3–0.9 s sooner.
const IN_FLIGHT: usize = 6;
/// The writer thread makes what it wrote durable every this many bytes
/// (the device's cache flush takes up to a second per GiB on a VM's disk;
/// done at the end alone, it would add that to every import).
const SYNC_EVERY: usize = 64 << 20;

impl Appender {
    /// Appends to `file` from `offset` on.
    pub fn start(file: DualFile, offset: u64) -> io::Result<Appender> {
        let (tx, rx) = sync_channel::<(u64, AlignedBuf)>(IN_FLIGHT);
        let (back_tx, back) = sync_channel::<AlignedBuf>(IN_FLIGHT + 1);
        let thread = std::thread::Builder::new()
            .name("blob-write".into())
            .spawn(move || {
                let mut file = file;
                // What is written is made durable as it goes, on a thread of
                // its own (writes go on meanwhile), instead of all in the
                // final fsync.
                let syncer = Syncer::start(file.buffered())?;
                let mut unsynced = 0usize;
                while let Ok((offset, buf)) = rx.recv() {
                    file.write_all_at(buf.as_slice(), offset)?;
                    unsynced += buf.len();
                    let _ = back_tx.try_send(buf);
                    if unsynced >= SYNC_EVERY {
                        syncer.nudge();
                        unsynced = 0;
                    }
                }
                syncer.finish()?;
                Ok(file)
            })?;
        Ok(Appender {
            cur: AlignedBuf::with_capacity(APPEND_BUF),
            cur_offset: offset,
            tx: Some(tx),
            back,
            spare: IN_FLIGHT,
            thread: Some(thread),
        })
    }

    /// The offset the next byte goes to.
    pub fn offset(&self) -> u64 {
        self.cur_offset + self.cur.len() as u64
    }

    pub fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.cur.extend(data);
            data = &data[n..];
            if self.cur.len() == self.cur.capacity() {
                self.hand_over()?;
            }
        }
        Ok(())
    }

    fn hand_over(&mut self) -> io::Result<()> {
        let next = match self.back.try_recv() {
            Ok(b) => b,
            Err(_) if self.spare > 0 => {
                self.spare -= 1;
                AlignedBuf::with_capacity(APPEND_BUF)
            }
            Err(_) => match self.back.recv() {
                Ok(b) => b,
                Err(_) => return Err(self.writer_error()),
            },
        };
        let full = std::mem::replace(&mut self.cur, next);
        self.cur.clear();
        let offset = self.cur_offset;
        self.cur_offset += full.len() as u64;
        let sent = self.tx.as_ref().map(|tx| tx.send((offset, full)));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => Err(self.writer_error()),
        }
    }

    /// Leaves `n` bytes unwritten (a hole) after what was appended so far.
    /// Both the offset and `n` must be multiples of [`ALIGN`], so that the
    /// writes after the hole stay aligned.
    pub fn skip(&mut self, n: u64) -> io::Result<()> {
        if !self.offset().is_multiple_of(ALIGN as u64) || !n.is_multiple_of(ALIGN as u64) {
            return Err(io::Error::other("an unaligned hole"));
        }
        if !self.cur.is_empty() {
            self.hand_over()?;
        }
        self.cur_offset += n;
        Ok(())
    }

    /// The writer thread stopped: its error.
    fn writer_error(&mut self) -> io::Error {
        self.tx.take();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the blob writer thread panicked"),
            _ => io::Error::other("the blob writer thread stopped"),
        }
    }

    /// Writes what is buffered and waits for the writer; returns the file.
    pub fn finish(mut self) -> io::Result<DualFile> {
        if !self.cur.is_empty() {
            let full = std::mem::replace(&mut self.cur, AlignedBuf::with_capacity(0));
            let offset = self.cur_offset;
            self.cur_offset += full.len() as u64;
            if let Some(tx) = &self.tx {
                let _ = tx.send((offset, full));
            }
        }
        self.tx.take();
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the blob writer thread panicked")),
            None => Err(io::Error::other("the blob writer thread stopped")),
        }
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        // Unblock and reap the thread; its result no longer matters.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn aligned_buffers_are_aligned_and_bounded() {
        for cap in [0, 1, 4096, 65536 + 7] {
            let mut b = AlignedBuf::with_capacity(cap);
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
            let data = pattern(cap + 100, 1);
            assert_eq!(b.extend(&data), cap);
            assert_eq!(b.as_slice(), &data[..cap]);
            assert_eq!(b.extend(&data), 0, "full");
        }
    }

    /// A new file at `path`, opened both ways.
    fn new_dual(path: &Path) -> DualFile {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .unwrap();
        DualFile::new(path, file)
    }

    /// Appends of odd sizes from an odd offset, plus a write through the
    /// cache before them: the file holds exactly the bytes, on a file system
    /// with O_DIRECT (the temp dir is usually one) and without.
    #[test]
    fn appends_land_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        for offset in [0u64, 65536, 12345] {
            let path = dir.path().join(format!("f{offset}"));
            let mut dual = new_dual(&path);
            let head = pattern(offset as usize, 9);
            dual.write_all_at(&head, 0).unwrap();
            let mut app = Appender::start(dual, offset).unwrap();
            let mut expected = head.clone();
            for (i, n) in [65536usize, 1, 4 << 20, 3 << 20, 65536 * 3, 17]
                .iter()
                .enumerate()
            {
                let data = pattern(*n, i as u8);
                app.append(&data).unwrap();
                expected.extend_from_slice(&data);
            }
            assert_eq!(app.offset(), expected.len() as u64);
            let file = app.finish().unwrap();
            file.buffered().sync_all().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), expected, "offset {offset}");
        }
    }

    #[test]
    fn unaligned_writes_fall_back_to_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut dual = new_dual(&path);
        let mut buf = AlignedBuf::with_capacity(3 * ALIGN);
        buf.extend(&pattern(3 * ALIGN, 3));
        // Aligned, then misaligned in memory, offset and length.
        dual.write_all_at(buf.as_slice(), 0).unwrap();
        dual.write_all_at(&buf.as_slice()[1..ALIGN + 1], 3 * ALIGN as u64)
            .unwrap();
        let mut expected = buf.as_slice().to_vec();
        expected.extend_from_slice(&buf.as_slice()[1..ALIGN + 1]);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
