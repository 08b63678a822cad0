use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use diskformat::ReadAt;
use sha2::{Digest, Sha256};

use super::*;

fn pattern(n: usize) -> Vec<u8> {
    // Data with long zero runs, unaligned data runs and noise.
    let mut v = vec![0u8; n];
    let mut x: u32 = 12345;
    for (i, b) in v.iter_mut().enumerate() {
        if (i / 70_000) % 3 != 0 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *b = (x >> 16) as u8;
        }
    }
    v
}

/// Serves re-reads from the data, counting them; `flip` corrupts them.
struct Source {
    data: Vec<u8>,
    calls: AtomicUsize,
    flip: bool,
}

impl Source {
    fn new(data: &[u8]) -> Arc<Source> {
        Arc::new(Source {
            data: data.to_vec(),
            calls: AtomicUsize::new(0),
            flip: false,
        })
    }
}

impl Reread for Source {
    fn reread(&self, offset: u64, len: usize) -> Result<Vec<u8>, RereadFailure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut v = self.data[offset as usize..offset as usize + len].to_vec();
        if self.flip {
            v[len / 2] ^= 0x40;
        }
        Ok(v)
    }
}

/// Small enough for the tests' few MiB to leave the ring.
fn small() -> SpoolTuning {
    SpoolTuning {
        ring_bytes: 1 << 20,
        ring_shared_bytes: 1 << 40,
        ring_chunks: 64,
        keep_behind: 256 << 10,
        spill_after_rereads: 1 << 40,
        hold_limit: Duration::from_millis(50),
        decide_after: Duration::from_secs(60),
        disk_below_bytes_per_sec: 0.0,
    }
}

fn open_file(dir: &Path, len: u64, truncate: bool) -> (File, PathBuf) {
    let path = dir.join("s");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(&path)
        .unwrap();
    f.set_len(len).unwrap();
    (f, path)
}

fn spool_with(
    dir: &Path,
    len: u64,
    policy: SpoolPolicy,
    reread: Option<Arc<dyn Reread>>,
    tuning: SpoolTuning,
) -> Arc<Spool> {
    let (f, path) = open_file(dir, len, true);
    Arc::new(Spool::new(f, path, len, 0, policy, reread, tuning))
}

fn disk_spool(dir: &Path, len: u64) -> Arc<Spool> {
    spool_with(dir, len, SpoolPolicy::Disk, None, SpoolTuning::default())
}

async fn feed(spool: &Arc<Spool>, data: &[u8], piece: usize) -> Result<SpoolDone, String> {
    let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
    for p in data.chunks(piece) {
        if sink.send(Bytes::copy_from_slice(p)).await.is_err() {
            break;
        }
    }
    sink.finish().await
}

/// A reader following the download closely (as the converter does): it
/// reads in 64 KiB pieces, and the feeder never runs more than half a ring
/// ahead of it.
async fn feed_followed(spool: &Arc<Spool>, data: &[u8], piece: usize) -> Vec<u8> {
    let read_upto = Arc::new(AtomicU64::new(0));
    let follower = {
        let spool = spool.clone();
        let read_upto = read_upto.clone();
        std::thread::spawn(move || {
            let mut all = vec![0u8; spool.len() as usize];
            for (i, c) in all.chunks_mut(64 << 10).enumerate() {
                spool.read_at((i << 16) as u64, c).unwrap();
                read_upto.store(((i << 16) + c.len()) as u64, Ordering::SeqCst);
            }
            all
        })
    };
    let lead = (spool.tuning.ring_bytes / 2) as u64;
    let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
    let mut at = 0u64;
    for p in data.chunks(piece) {
        while at > read_upto.load(Ordering::SeqCst) + lead {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sink.send(Bytes::copy_from_slice(p)).await.unwrap();
        at += p.len() as u64;
    }
    let done = sink.finish().await.unwrap();
    assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(data)));
    follower.join().unwrap()
}

fn allocated(spool: &Spool) -> u64 {
    std::fs::metadata(spool.path()).unwrap().blocks() * 512
}

fn read_all(spool: &Spool) -> Vec<u8> {
    let mut all = vec![0u8; spool.len() as usize];
    spool.read_at(0, &mut all).unwrap();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_hashes_and_serves_while_arriving() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(3 * WRITE_BUF + 12_345);
    let spool = disk_spool(dir.path(), data.len() as u64);
    let checkpoints = Arc::new(Mutex::new(Vec::new()));
    let cp = checkpoints.clone();
    let sink =
        SpoolSink::start(spool.clone(), Box::new(move |p| cp.lock().unwrap().push(p))).unwrap();
    // A reader waiting for the last byte before anything arrived.
    let reader = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            spool.read_at(spool.len() - 1, &mut b).map(|_| b[0])
        })
    };
    for piece in data.chunks(7_777) {
        sink.send(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    let done = sink.finish().await.unwrap();
    assert_eq!(done.bytes, data.len() as u64);
    assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(reader.join().unwrap().unwrap(), *data.last().unwrap());
    assert_eq!(read_all(&spool), data);
    assert!(spool.is_complete());
    // Disk mode: the file holds everything, and the sidecar was told so.
    assert_eq!(std::fs::read(spool.path()).unwrap(), data);
    assert_eq!(
        *checkpoints.lock().unwrap().last().unwrap(),
        data.len() as u64
    );
    // Reading past the end is an EOF, not a wait.
    let mut b = [0u8; 2];
    let e = spool.read_at(spool.len() - 1, &mut b).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    let e = spool.read_at(u64::MAX, &mut b).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

/// Disk mode with more data than the ring holds: old bytes come from the
/// file, new ones from memory, and reads that straddle both are whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_mode_reads_from_the_ring_and_from_the_file_agree() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(12 * WRITE_BUF + 4321);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Disk,
        Some(Source::new(&data)),
        small(),
    );
    let follower = {
        let spool = spool.clone();
        let data = data.clone();
        std::thread::spawn(move || {
            let mut off = 777u64;
            let mut b = vec![0u8; 3 << 20];
            while off + b.len() as u64 <= spool.len() {
                spool.read_at(off, &mut b).unwrap();
                assert_eq!(&b[..], &data[off as usize..off as usize + b.len()]);
                off += b.len() as u64;
            }
        })
    };
    feed(&spool, &data, 100_000).await.unwrap();
    follower.join().unwrap();
    for (off, len) in [
        (0usize, 5usize << 20),
        (data.len() - (3 << 20), 3 << 20),
        (data.len() - 3 * WRITE_BUF, 2 * WRITE_BUF + 17),
    ] {
        let mut b = vec![0u8; len];
        spool.read_at(off as u64, &mut b).unwrap();
        assert_eq!(&b[..], &data[off..off + len], "at {off}");
    }
    assert_eq!(std::fs::read(spool.path()).unwrap(), data);
    assert_eq!(spool.stats().reread, 0);
    assert_eq!(spool.stats().mode, "disk");
}

/// Memory mode with a reader right behind the download: nothing is written
/// to the file and nothing is fetched twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_with_a_follower_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(16 * WRITE_BUF + 999);
    let src = Source::new(&data);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Memory,
        Some(src.clone()),
        small(),
    );
    assert_eq!(feed_followed(&spool, &data, 50_000).await, data);
    let stats = spool.stats();
    assert_eq!(stats.mode, "memory");
    assert_eq!(src.calls.load(Ordering::SeqCst), 0, "{stats:?}");
    assert_eq!(stats.from_file, 0, "{stats:?}");
    assert_eq!(stats.spilled, 0, "{stats:?}");
    assert_eq!(allocated(&spool), 0);
}

/// Memory mode with a reader slower than the download (a slow disk behind
/// the converter): the download waits for it; nothing is spilled, nothing
/// read twice, and the ring stays within its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_waits_for_a_slow_converter() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(6 * WRITE_BUF + 3);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Memory,
        Some(Source::new(&data)),
        small(),
    );
    let reader = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            let mut all = vec![0u8; spool.len() as usize];
            let mut most = 0;
            for (i, c) in all.chunks_mut(64 << 10).enumerate() {
                std::thread::sleep(Duration::from_millis(2));
                spool.read_at((i << 16) as u64, c).unwrap();
                most = most.max(spool.lock().ring.bytes());
            }
            (all, most)
        })
    };
    feed(&spool, &data, 64 << 10).await.unwrap();
    let (all, most) = reader.join().unwrap();
    assert_eq!(all, data);
    let t = small();
    assert!(
        most <= t.ring_bytes + t.ring_bytes / 4 + (64 << 10),
        "{most}"
    );
    let stats = spool.stats();
    assert_eq!(
        (stats.spilled, stats.from_file, stats.reread),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.from_ring, data.len() as u64);
}

/// Memory mode with nobody reading: every chunk that leaves the ring may
/// still be needed, so it is spilled after the hold limit, and later reads
/// come from the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_mode_spills_what_was_not_read_yet() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(8 * WRITE_BUF + 5);
    let src = Source::new(&data);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Memory,
        Some(src.clone()),
        small(),
    );
    feed(&spool, &data, 30_000).await.unwrap();
    assert_eq!(read_all(&spool), data);
    let stats = spool.stats();
    assert!(stats.spilled >= 6 * WRITE_BUF as u64, "{stats:?}");
    assert!(stats.from_file > 0, "{stats:?}");
    assert_eq!(src.calls.load(Ordering::SeqCst), 0);
}

/// The inspector (untracked) reads bytes the converter's progress let the
/// ring drop: they are fetched again, checked, and kept for the next read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_bytes_are_read_again_once_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(10 * WRITE_BUF + 77);
    let src = Source::new(&data);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Memory,
        Some(src.clone()),
        small(),
    );
    assert_eq!(feed_followed(&spool, &data, 40_000).await, data);
    let before = spool.stats();
    assert_eq!(before.spilled, 0, "{before:?}");
    // Two reads in the same dropped granule, one across two granules.
    untracked(|| {
        for (off, len) in [(100usize, 4096usize), (9000, 512), ((1 << 20) - 10, 30)] {
            let mut b = vec![0u8; len];
            spool.read_at(off as u64, &mut b).unwrap();
            assert_eq!(&b[..], &data[off..off + len]);
        }
    });
    assert_eq!(src.calls.load(Ordering::SeqCst), 2);
    assert_eq!(spool.stats().reread, 2 << 20);
    // The last granule is checked against the whole digest.
    let last = data.len() - 50;
    let mut b = vec![0u8; 50];
    let in_ring = spool.stats().from_ring;
    spool.read_at(last as u64, &mut b).unwrap();
    assert_eq!(&b[..], &data[last..]);
    assert!(
        spool.stats().from_ring > in_ring,
        "the newest bytes stay in memory"
    );
    assert!(spool.reread_failure().is_none());
}

/// A source that answers a re-read with other bytes fails the read with a
/// precise reason; the bad bytes are never served or kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reread_that_differs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(6 * WRITE_BUF);
    let src = Arc::new(Source {
        data: data.clone(),
        calls: AtomicUsize::new(0),
        flip: true,
    });
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Memory,
        Some(src.clone()),
        small(),
    );
    assert_eq!(feed_followed(&spool, &data, 40_000).await, data);
    let e = spool.read_at(10, &mut [0u8; 100]).unwrap_err();
    assert!(e.to_string().contains("differ"), "{e}");
    assert!(matches!(
        spool.reread_failure(),
        Some(RereadFailure::Changed(_))
    ));
    // Not kept: the next read asks again (and fails again).
    assert!(spool.read_at(10, &mut [0u8; 100]).is_err());
    assert_eq!(src.calls.load(Ordering::SeqCst), 2);
}

/// Many re-reads: from then on every chunk that leaves is spilled instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rereads_switch_to_spilling() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(24 * WRITE_BUF);
    let src = Source::new(&data);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Memory,
        Some(src.clone()),
        SpoolTuning {
            spill_after_rereads: 1 << 20,
            ..small()
        },
    );
    // The reader runs ahead in jumps and comes back: a layout whose reads
    // go backwards.
    let reader = {
        let spool = spool.clone();
        let data = data.clone();
        std::thread::spawn(move || {
            let step = 4 * WRITE_BUF;
            for base in (0..data.len()).step_by(step) {
                let back = base.saturating_sub(3 * WRITE_BUF);
                for off in [base, back] {
                    let mut b = vec![0u8; 1000];
                    spool.read_at(off as u64, &mut b).unwrap();
                    assert_eq!(&b[..], &data[off..off + 1000]);
                }
            }
        })
    };
    feed(&spool, &data, 64 << 10).await.unwrap();
    reader.join().unwrap();
    assert_eq!(read_all(&spool), data);
    let stats = spool.stats();
    assert!(stats.reread <= data.len() as u64, "{stats:?}");
    assert!(stats.spilled > 0, "{stats:?}");
}

/// A converter whose first read is near the end of the source (a layout
/// that jumps ahead) cannot read what the ring holds before more arrives:
/// holding gives way to spilling after one hold limit, not once per ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_converter_jumping_ahead_is_not_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(12 * WRITE_BUF);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Memory,
        Some(Source::new(&data)),
        SpoolTuning {
            hold_limit: Duration::from_millis(300),
            ..small()
        },
    );
    let reader = {
        let spool = spool.clone();
        std::thread::spawn(move || {
            let mut tail = [0u8; 100];
            spool.read_at(spool.len() - 100, &mut tail).unwrap();
            (tail, read_all(&spool))
        })
    };
    let started = Instant::now();
    feed(&spool, &data, 64 << 10).await.unwrap();
    // One hold limit, not one per ring's worth (12 of them).
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (tail, all) = reader.join().unwrap();
    assert_eq!(&tail[..], &data[data.len() - 100..]);
    assert_eq!(all, data);
    assert!(spool.stats().spilled > 0);
    assert!(spool.lock().no_hold);
}

/// Once the converter is done, the rest of the download flows without
/// waiting for it and without being kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_spools_drop_without_holding() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(8 * WRITE_BUF);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Memory,
        Some(Source::new(&data)),
        SpoolTuning {
            hold_limit: Duration::from_secs(3600),
            ..small()
        },
    );
    spool.release();
    tokio::time::timeout(Duration::from_secs(20), feed(&spool, &data, 64 << 10))
        .await
        .expect("no hold after release")
        .unwrap();
    assert_eq!(spool.stats().spilled, 0);
    // Late reads are fetched again.
    assert_eq!(read_all(&spool), data);
    assert!(spool.stats().reread > 0);
}

#[test]
fn rings_share_the_process_budget() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = SpoolTuning {
        ring_bytes: 8 << 20,
        ring_shared_bytes: 16 << 20,
        ..SpoolTuning::default()
    };
    let spools: Vec<Spool> = (0..3)
        .map(|i| {
            let sub = dir.path().join(format!("{i}"));
            std::fs::create_dir(&sub).unwrap();
            let (f, path) = open_file(&sub, 10, true);
            Spool::new(f, path, 10, 0, SpoolPolicy::Disk, None, tuning.clone())
        })
        .collect();
    assert_eq!(spools[0].ring_budget(), 8 << 20);
    for s in &spools {
        s.count_ring();
    }
    // The third download to start gets a third (other tests' spools may
    // be counted too: less then, but never under half the most); budgets
    // stay what they were when each download started.
    let third = spools[2].ring_budget();
    assert!((4 << 20..=(16 << 20) / 3).contains(&third), "{third}");
    assert!(spools[0].ring_budget() >= third);
    drop(spools);
}

#[test]
fn auto_chooses_by_rate_and_without_a_reread_source() {
    let dir = tempfile::tempdir().unwrap();
    let (f, path) = open_file(dir.path(), 10, true);
    let s = Spool::new(f, path, 10, 0, SpoolPolicy::Auto, None, small());
    assert_eq!(s.lock().mode, Mode::Disk, "no re-reads: disk");
    let (f, path) = open_file(dir.path(), 10, true);
    let s = Spool::new(
        f,
        path,
        10,
        0,
        SpoolPolicy::Memory,
        Some(Source::new(&[0; 10])),
        small(),
    );
    assert_eq!(s.lock().mode, Mode::Memory);
    let (f, path) = open_file(dir.path(), 10, false);
    let s = Spool::new(
        f,
        path,
        10,
        4,
        SpoolPolicy::Memory,
        Some(Source::new(&[0; 10])),
        small(),
    );
    assert_eq!(s.lock().mode, Mode::Disk, "a resumed spool stays on disk");
}

/// `auto` over a slow download picks disk (the file is then complete, for a
/// restart); over a fast one, memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_disk_for_slow_sources_and_memory_for_fast_ones() {
    let data = pattern(4 * WRITE_BUF);
    for (slow, want) in [(true, "disk"), (false, "memory")] {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(
            dir.path(),
            data.len() as u64,
            SpoolPolicy::Auto,
            Some(Source::new(&data)),
            SpoolTuning {
                decide_after: Duration::from_millis(200),
                disk_below_bytes_per_sec: (64 << 20) as f64,
                ..small()
            },
        );
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        for (i, p) in data.chunks(256 << 10).enumerate() {
            if slow && i < 4 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sink.send(Bytes::copy_from_slice(p)).await.unwrap();
        }
        sink.finish().await.unwrap();
        assert_eq!(spool.stats().mode, want);
        if slow {
            assert_eq!(std::fs::read(spool.path()).unwrap(), data);
        }
        assert_eq!(read_all(&spool), data);
    }
}

/// Zero chunks seen on the way in are hinted as zeros; everything else, and
/// every partial chunk, may be data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_report_the_zero_chunks() {
    let z = ZERO_CHUNK;
    let dir = tempfile::tempdir().unwrap();
    // data | 3 zero chunks | data (1 byte) | 40 zero chunks | 100 bytes of zeros
    let len = 45 * z + 100;
    let mut data = vec![0u8; len];
    data[..z].fill(7);
    data[4 * z + 5] = 1;
    let spool = disk_spool(dir.path(), len as u64);
    feed(&spool, &data, 50_000).await.unwrap();
    let hint = |off: usize, max: usize| spool.extent_hint(off as u64, max as u64).unwrap();
    let h = |len: usize, zero: bool| diskformat::Hint {
        len: len as u64,
        zero,
    };
    assert_eq!(hint(0, len), h(z, false));
    assert_eq!(hint(10, len), h(z - 10, false));
    assert_eq!(hint(z, len), h(3 * z, true));
    assert_eq!(hint(z + 7, 100), h(100, true));
    assert_eq!(hint(4 * z, len), h(z, false));
    assert_eq!(hint(5 * z, len), h(40 * z, true));
    assert_eq!(hint(45 * z, len), h(100, false), "a partial chunk is data");
    assert_eq!(hint(len - 1, 10), h(1, false));
    // Every hinted zero run reads as zeros.
    let mut off = 0;
    while off < len {
        let hh = hint(off, len);
        if hh.zero {
            assert!(data[off..off + hh.len as usize].iter().all(|&b| b == 0));
        }
        off += hh.len as usize;
    }
}

/// A peer sending tiny chunks: the ring keeps a bounded number of them,
/// older bytes come from the file, all intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_chunks_bound_the_ring_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = SpoolTuning {
        ring_chunks: 100,
        ..small()
    };
    let data = pattern(tuning.ring_chunks * 100 * 3 + 4321);
    let spool = spool_with(
        dir.path(),
        data.len() as u64,
        SpoolPolicy::Disk,
        None,
        tuning.clone(),
    );
    let done = feed(&spool, &data, 100).await.unwrap();
    assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    let held = spool.lock().ring.len();
    assert!(
        held <= tuning.ring_chunks + tuning.ring_chunks / 4,
        "{held}"
    );
    assert_eq!(read_all(&spool), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_chunks_become_holes() {
    let dir = tempfile::tempdir().unwrap();
    let len = 16 * WRITE_BUF;
    let mut data = vec![0u8; len];
    data[5] = 1;
    let spool = spool_with(dir.path(), len as u64, SpoolPolicy::Disk, None, small());
    let done = feed(&spool, &data, 64 << 10).await.unwrap();
    assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(read_all(&spool), data);
    // One 64 KiB chunk written: far less than 16 MiB allocated.
    assert!(allocated(&spool) < 1 << 20, "{} bytes", allocated(&spool));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_prefix_is_rehashed() {
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(2 * WRITE_BUF + 999);
    let prefix = 1_500_001usize;
    {
        let (f, _) = open_file(dir.path(), data.len() as u64, true);
        f.write_all_at(&data[..prefix], 0).unwrap();
    }
    let (f, path) = open_file(dir.path(), data.len() as u64, false);
    let spool = Arc::new(Spool::new(
        f,
        path,
        data.len() as u64,
        prefix as u64,
        SpoolPolicy::Auto,
        Some(Source::new(&data)),
        small(),
    ));
    let done = feed(&spool, &data[prefix..], 10_000).await.unwrap();
    assert_eq!(done.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    assert_eq!(read_all(&spool), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_and_long_inputs_fail_and_wake_readers() {
    for policy in [SpoolPolicy::Disk, SpoolPolicy::Memory] {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(
            dir.path(),
            1000,
            policy,
            Some(Source::new(&[1; 1000])),
            small(),
        );
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        let reader = {
            let spool = spool.clone();
            std::thread::spawn(move || spool.read_at(900, &mut [0u8; 100]))
        };
        sink.send(Bytes::from(vec![1u8; 500])).await.unwrap();
        let e = sink.finish().await.unwrap_err();
        assert!(e.contains("500 of 1000"), "{e}");
        assert!(reader.join().unwrap().is_err());

        let dir = tempfile::tempdir().unwrap();
        let spool = spool_with(
            dir.path(),
            1000,
            policy,
            Some(Source::new(&[1; 1000])),
            small(),
        );
        let sink = SpoolSink::start(spool.clone(), Box::new(|_| {})).unwrap();
        let _ = sink.send(Bytes::from(vec![1u8; 1500])).await;
        let e = sink.finish().await.unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}

#[test]
fn failure_unblocks_and_keeps_present_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = disk_spool(dir.path(), 100);
    {
        let mut st = spool.lock();
        st.ring.push(0, Bytes::from(vec![3u8; 50]));
        st.frontier = 50;
    }
    let s2 = spool.clone();
    let t = std::thread::spawn(move || s2.read_at(60, &mut [0u8; 10]));
    std::thread::sleep(Duration::from_millis(50));
    spool.fail("cancelled");
    let e = t.join().unwrap().unwrap_err();
    assert!(e.to_string().contains("cancelled"));
    let mut b = [0u8; 50];
    spool.read_at(0, &mut b).unwrap();
    assert_eq!(b, [3u8; 50]);
    // An empty read never waits, wherever it is.
    spool.read_at(100, &mut []).unwrap();
}

/// A keeper that cannot write (a full disk) stops the spool; the download
/// then ends early, so the pusher sees only "the transfer ended after …".
/// The spool's result names the first failure, the cause.
#[test]
fn the_result_names_the_first_failure_not_its_echo() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = open_file(dir.path(), 4 << 20, true);
    // Read-only: the keeper's first write fails.
    let file = File::open(&path).unwrap();
    let spool = Arc::new(Spool::new(
        file,
        path,
        4 << 20,
        0,
        SpoolPolicy::Disk,
        None,
        SpoolTuning::default(),
    ));
    let mut sent = 0;
    let input = {
        let spool = spool.clone();
        Box::new(move || {
            if sent == 8 {
                // Like the download, which stops once the spool has failed.
                let waited = Instant::now();
                while spool.failure().is_none() && waited.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                return None;
            }
            sent += 1;
            Some(Bytes::from(vec![7u8; 64 << 10]))
        })
    };
    let (tx, rx) = std::sync::mpsc::channel();
    threads::start_threads(
        spool.clone(),
        Box::new(|_| {}),
        input,
        Box::new(move |r| tx.send(r).unwrap()),
    )
    .unwrap();
    let e = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap_err();
    assert!(e.contains("writing the spool file failed"), "{e}");
}
