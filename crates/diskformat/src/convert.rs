//! The converter: any opened [`DiskImage`] into the [`Qcow2Writer`].
//!
//! The guest disk is cut into 4 MiB windows in guest order. Windows wholly
//! inside a zero extent are skipped without reading. Each other window is
//! filled (data extents read, zero extents memset) by decode workers, so
//! that decompression (qcow2, streamOptimized VMDK) uses more than one core;
//! the calling thread takes the windows back *in order*, drops all-zero
//! clusters and hands the rest to the writer. The output is therefore the
//! same whatever the number of workers. Buffers are recycled: memory is
//! (workers × 2 + 1) windows, whatever the disk size.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use crate::qcow2::writer::{AppendSink, Qcow2Writer};
use crate::util::is_zero;
use crate::{DiskImage, Extent, ExtentKind, FormatError};

/// Bytes read per step (a multiple of the writer's cluster size).
const WINDOW: u64 = 4 << 20;

/// Most decode workers `convert` starts.
const MAX_WORKERS: usize = 4;

/// What a conversion did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertStats {
    /// Guest bytes covered (the virtual size when it completes).
    pub guest_bytes: u64,
    /// Guest bytes actually read from the source (data extents).
    pub bytes_read: u64,
    /// Clusters written to the qcow2.
    pub data_clusters: u64,
    /// Clusters read but found all zero, left unallocated.
    pub zero_clusters_skipped: u64,
}

/// Copy the guest disk of `img` into `writer`. `progress` is called with
/// the guest bytes done so far after every step; returning `false`
/// cancels (the error then satisfies [`FormatError::is_cancelled`]).
/// Uses up to 4 decode threads (as many as the machine has cores).
pub fn convert<S: AppendSink>(
    img: &dyn DiskImage,
    writer: &mut Qcow2Writer<S>,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<ConvertStats, FormatError> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(MAX_WORKERS);
    convert_with(img, writer, progress, workers)
}

/// [`convert`] with an explicit number of decode threads; `0` or `1` does
/// everything on the calling thread.
pub fn convert_with<S: AppendSink>(
    img: &dyn DiskImage,
    writer: &mut Qcow2Writer<S>,
    progress: &mut dyn FnMut(u64) -> bool,
    workers: usize,
) -> Result<ConvertStats, FormatError> {
    let vs = img.virtual_size();
    if writer.virtual_size() != vs {
        return Err(FormatError::Corrupt(format!(
            "converter: writer size {} differs from the image's {vs}",
            writer.virtual_size()
        )));
    }
    if workers <= 1 {
        serial(img, writer, progress)
    } else {
        parallel(img, writer, progress, workers)
    }
}

/// The extent covering `pos`, fetched once per extent (`cur` caches it).
fn extent_for(img: &dyn DiskImage, pos: u64, cur: &mut Extent) -> Result<(), FormatError> {
    if pos >= cur.offset && pos - cur.offset < cur.len {
        return Ok(());
    }
    let vs = img.virtual_size();
    let e = img.extent_at(pos, vs - pos)?;
    // Each step must advance, or a bad container could loop forever.
    if e.offset != pos || e.len == 0 || e.len > vs - pos {
        return Err(FormatError::Corrupt(format!(
            "container returned an invalid extent at {pos}: {e:?}"
        )));
    }
    *cur = e;
    Ok(())
}

fn no_extent() -> Extent {
    Extent {
        offset: 0,
        len: 0,
        kind: ExtentKind::Zero,
    }
}

/// Where the next window starts, skipping whole clusters of a zero extent
/// at `w` (cluster aligned). Returns `w` itself when there is data at `w`.
fn skip_zeros(img: &dyn DiskImage, w: u64, cs: u64, cur: &mut Extent) -> Result<u64, FormatError> {
    let vs = img.virtual_size();
    extent_for(img, w, cur)?;
    if cur.kind == ExtentKind::Zero {
        let end = cur.offset + cur.len;
        let skip_to = if end >= vs { vs } else { end / cs * cs };
        if skip_to > w {
            return Ok(skip_to);
        }
    }
    Ok(w)
}

/// Fill `buf` with guest bytes `[w, w + buf.len())`: data extents read,
/// zero extents zeroed. Returns the bytes read from the source.
fn fill(img: &dyn DiskImage, w: u64, buf: &mut [u8], cur: &mut Extent) -> Result<u64, FormatError> {
    let wend = w + buf.len() as u64;
    let mut pos = w;
    let mut read = 0;
    while pos < wend {
        extent_for(img, pos, cur)?;
        let n = (cur.offset + cur.len).min(wend) - pos;
        let b = (pos - w) as usize;
        let slice = &mut buf[b..b + n as usize];
        match cur.kind {
            ExtentKind::Data => {
                img.read_guest(pos, slice)?;
                read += n;
            }
            ExtentKind::Zero => slice.fill(0),
        }
        pos += n;
    }
    Ok(read)
}

/// Hand the non-zero clusters of a filled window to the writer.
fn emit<S: AppendSink>(
    writer: &mut Qcow2Writer<S>,
    w: u64,
    buf: &[u8],
    stats: &mut ConvertStats,
) -> Result<(), FormatError> {
    let cs = writer.cluster_size() as usize;
    for (i, data) in buf.chunks(cs).enumerate() {
        if is_zero(data) {
            stats.zero_clusters_skipped += 1;
        } else {
            writer.write_cluster(w + (i * cs) as u64, data)?;
            stats.data_clusters += 1;
        }
    }
    Ok(())
}

fn serial<S: AppendSink>(
    img: &dyn DiskImage,
    writer: &mut Qcow2Writer<S>,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<ConvertStats, FormatError> {
    let vs = img.virtual_size();
    let cs = writer.cluster_size();
    let mut stats = ConvertStats::default();
    let mut buf = vec![0u8; WINDOW as usize];
    let mut cur = no_extent();
    let mut w = 0u64;
    while w < vs {
        let next = skip_zeros(img, w, cs, &mut cur)?;
        if next == w {
            let wend = (w + WINDOW).min(vs);
            let window = &mut buf[..(wend - w) as usize];
            stats.bytes_read += fill(img, w, window, &mut cur)?;
            emit(writer, w, window, &mut stats)?;
            w = wend;
        } else {
            w = next;
        }
        stats.guest_bytes = w;
        if !progress(w) {
            return Err(FormatError::cancelled());
        }
    }
    Ok(stats)
}

/// A window handed to a worker: guest start, length, and a buffer to fill.
struct Job {
    start: u64,
    len: usize,
    buf: Vec<u8>,
}

/// A worker's answer: the job's start and its filled buffer (or the error).
type Done = (u64, Result<(Vec<u8>, u64), FormatError>);

fn parallel<S: AppendSink>(
    img: &dyn DiskImage,
    writer: &mut Qcow2Writer<S>,
    progress: &mut dyn FnMut(u64) -> bool,
    workers: usize,
) -> Result<ConvertStats, FormatError> {
    // Windows in flight at once: enough to keep every worker busy while the
    // calling thread writes the oldest one.
    let depth = workers * 2;
    let (job_tx, job_rx) = sync_channel::<Job>(depth);
    // Results never block a worker: at most `depth` jobs exist.
    let (done_tx, done_rx) = sync_channel::<Done>(depth);
    let job_rx = Mutex::new(job_rx);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            let job_rx = &job_rx;
            let done_tx = done_tx.clone();
            scope.spawn(move || worker(img, job_rx, done_tx));
        }
        drop(done_tx);
        // Dropping `job_tx` (on return, error or cancel) lets workers end;
        // the scope then joins them.
        let pool = Pool {
            jobs: job_tx,
            done: done_rx,
            depth,
        };
        drive(img, writer, progress, pool)
    })
}

fn worker(img: &dyn DiskImage, jobs: &Mutex<Receiver<Job>>, done: SyncSender<Done>) {
    let mut cur = no_extent();
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(mut job) = job else {
            return;
        };
        let r = fill(img, job.start, &mut job.buf[..job.len], &mut cur).map(|read| (job.buf, read));
        if done.send((job.start, r)).is_err() {
            return;
        }
    }
}

/// The calling thread's ends of the workers' channels, and how many
/// windows may be in flight at once.
struct Pool {
    jobs: SyncSender<Job>,
    done: Receiver<Done>,
    depth: usize,
}

/// The calling thread's side of `parallel`: plan windows, feed workers,
/// and write finished windows in guest order.
fn drive<S: AppendSink>(
    img: &dyn DiskImage,
    writer: &mut Qcow2Writer<S>,
    progress: &mut dyn FnMut(u64) -> bool,
    pool: Pool,
) -> Result<ConvertStats, FormatError> {
    let (vs, cs, depth) = (img.virtual_size(), writer.cluster_size(), pool.depth);
    let mut stats = ConvertStats::default();
    let mut spare: Vec<Vec<u8>> = Vec::with_capacity(depth);
    // In flight, in guest order: (start, len, filled buffer once back).
    let mut queue: VecDeque<(u64, usize, Option<Vec<u8>>)> = VecDeque::with_capacity(depth);
    let mut cur = no_extent();
    let mut w = 0u64;
    loop {
        // Plan and send windows while there is room.
        while w < vs && queue.len() < depth {
            let next = skip_zeros(img, w, cs, &mut cur)?;
            if next != w {
                w = next;
                continue;
            }
            let wend = (w + WINDOW).min(vs);
            let len = (wend - w) as usize;
            let buf = spare.pop().unwrap_or_else(|| vec![0u8; WINDOW as usize]);
            pool.jobs
                .send(Job { start: w, len, buf })
                .map_err(|_| FormatError::Io(std::io::Error::other("converter workers ended")))?;
            queue.push_back((w, len, None));
            w = wend;
        }
        // Write whatever is finished at the front, in order.
        while let Some((start, len, Some(_))) = queue.front() {
            let (start, len) = (*start, *len);
            let Some((_, _, Some(buf))) = queue.pop_front() else {
                break;
            };
            emit(writer, start, &buf[..len], &mut stats)?;
            spare.push(buf);
        }
        let done = queue.front().map(|q| q.0).unwrap_or(w);
        stats.guest_bytes = done;
        if !progress(done) {
            return Err(FormatError::cancelled());
        }
        if queue.is_empty() && w >= vs {
            return Ok(stats);
        }
        if queue.is_empty() {
            continue;
        }
        // Wait for the next finished window.
        let (start, r) = pool
            .done
            .recv()
            .map_err(|_| FormatError::Io(std::io::Error::other("converter workers ended")))?;
        let (buf, read) = r?;
        stats.bytes_read += read;
        match queue.iter_mut().find(|q| q.0 == start) {
            Some(slot) => slot.2 = Some(buf),
            None => {
                return Err(FormatError::Io(std::io::Error::other(
                    "converter: a window came back twice",
                )))
            }
        }
    }
}
