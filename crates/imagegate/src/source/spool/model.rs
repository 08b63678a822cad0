//! The spool's threads under shuttle's scheduler: random interleavings of
//! the pusher, the hasher, the keeper and a reader, for each mode. Shuttle's
//! `wait_timeout` never times out and it reports a deadlock when every
//! thread waits, so a wake-up the protocol misses fails the test instead of
//! being covered by a timeout (the keeper's two rules of time, deciding and
//! holding, are set far out of reach here).
//!
//! Run by `scripts/test` as
//! `cargo test -p imagegate --features spool-model --lib source::spool::model`.
//! Not modelled: `untracked` reads (a thread-local, which shuttle's threads
//! share) and the network side (the tokio channel in front of the pusher).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diskformat::ReadAt;
use sha2::{Digest, Sha256};
use shuttle::sync::mpsc;
use shuttle::thread;

use super::threads::start_threads;
use super::{Reread, RereadFailure, Spool, SpoolDone, SpoolTuning};
use crate::config::SpoolPolicy;

/// Iterations per scenario and scheduler.
const RUNS: usize = 200;

/// 200 KiB: data, a 64 KiB-aligned zero chunk (a hole in the file), data.
fn source() -> Vec<u8> {
    let mut v: Vec<u8> = (0..200u32 << 10)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    v[64 << 10..128 << 10].fill(0);
    v
}

/// A ring of 32 KiB against 8 KiB chunks: chunks leave while the reader
/// follows. Deciding and holding never end by the clock.
fn tiny() -> SpoolTuning {
    SpoolTuning {
        ring_bytes: 32 << 10,
        ring_shared_bytes: 1 << 40,
        ring_chunks: 64,
        keep_behind: 8 << 10,
        spill_after_rereads: 1 << 40,
        hold_limit: Duration::from_secs(3600),
        decide_after: Duration::from_secs(3600),
        disk_below_bytes_per_sec: 0.0,
    }
}

struct Source(Vec<u8>);

impl Reread for Source {
    fn reread(&self, offset: u64, len: usize) -> Result<Vec<u8>, RereadFailure> {
        Ok(self.0[offset as usize..offset as usize + len].to_vec())
    }
}

struct Run {
    spool: Arc<Spool>,
    _dir: tempfile::TempDir,
}

fn spool(policy: SpoolPolicy, data: &[u8]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    file.set_len(data.len() as u64).unwrap();
    let reread: Arc<dyn Reread> = Arc::new(Source(data.to_vec()));
    let spool = Spool::new(
        file,
        path,
        data.len() as u64,
        0,
        policy,
        Some(reread),
        tiny(),
    );
    Run {
        spool: Arc::new(spool),
        _dir: dir,
    }
}

/// Starts the threads on 8 KiB pieces of `data` (only the first `cut_at`
/// of them, if given); the receiver gets the result.
fn start(
    spool: &Arc<Spool>,
    data: &[u8],
    cut_at: Option<usize>,
) -> mpsc::Receiver<Result<SpoolDone, String>> {
    let mut chunks: Vec<Bytes> = data.chunks(8 << 10).map(Bytes::copy_from_slice).collect();
    if let Some(n) = cut_at {
        chunks.truncate(n);
    }
    let mut chunks = chunks.into_iter();
    let (tx, rx) = mpsc::channel();
    start_threads(
        spool.clone(),
        Box::new(|_| {}),
        Box::new(move || chunks.next()),
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .unwrap();
    rx
}

/// The converter: reads everything in 12 KiB pieces, in order, then the
/// first 16 KiB again (long gone from the ring: the file or a re-read).
fn read_all(spool: Arc<Spool>) -> std::io::Result<Vec<u8>> {
    let mut all = vec![0u8; spool.len() as usize];
    for (i, piece) in all.chunks_mut(12 << 10).enumerate() {
        spool.read_at((i * (12 << 10)) as u64, piece)?;
    }
    let mut again = vec![0u8; 16 << 10];
    spool.read_at(0, &mut again)?;
    assert_eq!(again[..], all[..16 << 10]);
    Ok(all)
}

fn complete_run(policy: SpoolPolicy) {
    let data = source();
    let run = spool(policy, &data);
    let done = start(&run.spool, &data, None);
    let reader = {
        let spool = run.spool.clone();
        thread::spawn(move || read_all(spool))
    };
    let read = reader.join().unwrap().unwrap();
    assert!(read == data, "the reader got other bytes");
    let done = done.recv().unwrap().unwrap();
    assert_eq!(done.bytes, data.len() as u64);
    assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
}

#[test]
fn disk_mode_in_every_interleaving() {
    shuttle::check_random(|| complete_run(SpoolPolicy::Disk), RUNS);
    shuttle::check_pct(|| complete_run(SpoolPolicy::Disk), RUNS, 3);
}

#[test]
fn memory_mode_in_every_interleaving() {
    shuttle::check_random(|| complete_run(SpoolPolicy::Memory), RUNS);
    shuttle::check_pct(|| complete_run(SpoolPolicy::Memory), RUNS, 3);
}

#[test]
fn auto_mode_decides_when_the_ring_fills() {
    shuttle::check_random(|| complete_run(SpoolPolicy::Auto), RUNS);
    shuttle::check_pct(|| complete_run(SpoolPolicy::Auto), RUNS, 3);
}

/// The input ends after 10 of 25 chunks: the reader waiting for byte 80 KiB
/// and on gets an error, the result is the failure, and no thread waits on.
fn cut_run(policy: SpoolPolicy) {
    let data = source();
    let run = spool(policy, &data);
    let done = start(&run.spool, &data, Some(10));
    let reader = {
        let spool = run.spool.clone();
        thread::spawn(move || read_all(spool))
    };
    assert!(reader.join().unwrap().is_err());
    let failed = done.recv().unwrap().unwrap_err();
    assert!(failed.contains("after 81920 of 204800"), "{failed}");
}

#[test]
fn a_cut_transfer_wakes_every_waiter() {
    for policy in [SpoolPolicy::Disk, SpoolPolicy::Memory, SpoolPolicy::Auto] {
        shuttle::check_random(move || cut_run(policy), RUNS);
        shuttle::check_pct(move || cut_run(policy), RUNS, 3);
    }
}
