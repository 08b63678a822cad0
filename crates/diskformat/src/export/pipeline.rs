//! The read side of every export, and the counting front of the sink.
//!
//! Contract: [`run`] hands the writer, in guest order, every 4 MiB window
//! that holds at least one allocated unit, filled (allocated units read,
//! the rest zeroed) and passed through a per-worker `transform` (VMDK
//! compresses grains there). Windows without data are never read. Workers
//! fill windows ahead of the writer, so reading (and compressing) overlaps
//! writing; buffers are recycled, so memory is (2 × workers + 1) windows
//! whatever the disk size. The output is the same for any worker count.
//! Threat model: sizes come from the allocation map (already bounded by the
//! virtual size); read errors end the export with `ExportError::Source`.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;

use super::map::{AllocMap, UNIT, UNITS_PER_WORD, WORD_SPAN};
use super::{ExportError, ExportSink, Progress};
use crate::DiskImage;

/// One window of guest data.
pub(crate) struct Window {
    pub start: u64,
    /// Guest bytes of the window inside the disk.
    pub len: usize,
    /// The 64 allocation bits of the window (bit i = unit i).
    pub mask: u64,
    /// Guest data: `len` rounded up to whole units, zero beyond `len`.
    pub data: Vec<u8>,
    /// A transform's output (e.g. compressed grains).
    pub out: Vec<u8>,
    /// A transform's index into `out`: (unit in window, offset, length).
    pub parts: Vec<(u32, u32, u32)>,
}

impl Window {
    fn empty() -> Self {
        Window {
            start: 0,
            len: 0,
            mask: 0,
            data: Vec::with_capacity(WORD_SPAN as usize),
            out: Vec::new(),
            parts: Vec::new(),
        }
    }

    /// The units of the window: (index, guest offset, bytes of unit data).
    pub(crate) fn units(&self) -> impl Iterator<Item = (u32, u64, &[u8])> {
        self.data
            .chunks(UNIT as usize)
            .enumerate()
            .map(|(i, d)| (i as u32, self.start + i as u64 * UNIT, d))
    }

    pub(crate) fn allocated(&self, unit: u32) -> bool {
        self.mask >> unit & 1 == 1
    }

    /// Reads the allocated units of the window from `disk`; zeroes the rest.
    fn fill(&mut self, disk: &dyn DiskImage, vs: u64) -> Result<(), ExportError> {
        let padded = (self.len as u64).div_ceil(UNIT) * UNIT;
        self.data.clear();
        self.data.resize(padded as usize, 0);
        let mut u = 0u64;
        while u < UNITS_PER_WORD {
            if self.mask >> u & 1 == 0 {
                u += 1;
                continue;
            }
            let first = u;
            while u < UNITS_PER_WORD && self.mask >> u & 1 == 1 {
                u += 1;
            }
            let from = self.start + first * UNIT;
            let to = (self.start + u * UNIT).min(vs);
            if from < to {
                let b = (first * UNIT) as usize;
                disk.read_guest(from, &mut self.data[b..b + (to - from) as usize])?;
            }
        }
        Ok(())
    }
}

/// The sink as the writers see it: counts bytes and reports progress.
pub(crate) struct Out<'a> {
    sink: &'a mut dyn ExportSink,
    progress: &'a mut dyn FnMut(Progress) -> bool,
    virtual_size: u64,
    written: u64,
}

impl<'a> Out<'a> {
    pub(crate) fn new(
        sink: &'a mut dyn ExportSink,
        virtual_size: u64,
        progress: &'a mut dyn FnMut(Progress) -> bool,
    ) -> Self {
        Out {
            sink,
            progress,
            virtual_size,
            written: 0,
        }
    }

    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), ExportError> {
        self.sink.write_all(data).map_err(ExportError::Sink)?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub(crate) fn zeros(&mut self, n: u64) -> Result<(), ExportError> {
        if n > 0 {
            self.sink.write_zeros(n).map_err(ExportError::Sink)?;
            self.written += n;
        }
        Ok(())
    }

    /// Bytes written so far: the file offset of the next byte.
    pub(crate) fn pos(&self) -> u64 {
        self.written
    }

    /// Reports `guest_done`; `Cancelled` when the callback says stop.
    pub(crate) fn progress(&mut self, guest_done: u64) -> Result<(), ExportError> {
        let p = Progress {
            guest_done,
            virtual_size: self.virtual_size,
            bytes_written: self.written,
        };
        if (self.progress)(p) {
            Ok(())
        } else {
            Err(ExportError::Cancelled)
        }
    }

    pub(crate) fn finish(mut self) -> Result<u64, ExportError> {
        self.sink.finish().map_err(ExportError::Sink)?;
        self.progress(self.virtual_size)?;
        Ok(self.written)
    }
}

/// Per-worker window transform (e.g. compression with its own state).
pub(crate) trait Transform: Send {
    fn apply(&mut self, w: &mut Window) -> Result<(), ExportError>;
}

/// No transform: the writer uses `Window::data` as it is.
pub(crate) struct Plain;

impl Transform for Plain {
    fn apply(&mut self, _: &mut Window) -> Result<(), ExportError> {
        Ok(())
    }
}

/// Feeds every window holding data to `consume`, in guest order; returns
/// the guest bytes read. `make` builds one transform per worker.
pub(crate) fn run<T: Transform>(
    disk: &dyn DiskImage,
    map: &AllocMap,
    workers: usize,
    make: &(dyn Fn() -> T + Sync),
    consume: &mut dyn FnMut(&Window) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    if workers <= 1 {
        let mut t = make();
        let mut w = Window::empty();
        let mut read = 0;
        for k in 0..map.words() {
            if plan(map, k, &mut w) {
                w.fill(disk, map.virtual_size())?;
                read += bytes_read(&w, map.virtual_size());
                t.apply(&mut w)?;
                consume(&w)?;
            }
        }
        return Ok(read);
    }
    let depth = workers * 2;
    let (job_tx, job_rx) = sync_channel::<Window>(depth);
    // Never blocks a worker: at most `depth` windows exist.
    let (done_tx, done_rx) = sync_channel::<Result<Window, ExportError>>(depth);
    let job_rx = Mutex::new(job_rx);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            let vs = map.virtual_size();
            scope.spawn(move || worker(disk, vs, make(), job_rx, done_tx));
        }
        drop(done_tx);
        // Dropping `job_tx` when `drive` returns ends the workers.
        drive(map, depth, job_tx, done_rx, consume)
    })
}

/// Sets up `w` for window `k`; false when it holds no data.
fn plan(map: &AllocMap, k: usize, w: &mut Window) -> bool {
    let mask = map.word(k);
    if mask == 0 {
        return false;
    }
    w.start = k as u64 * WORD_SPAN;
    w.len = (map.virtual_size() - w.start).min(WORD_SPAN) as usize;
    w.mask = mask;
    true
}

fn bytes_read(w: &Window, vs: u64) -> u64 {
    (0..UNITS_PER_WORD)
        .filter(|&u| w.mask >> u & 1 == 1)
        .map(|u| (vs.saturating_sub(w.start + u * UNIT)).min(UNIT))
        .sum()
}

fn worker<T: Transform>(
    disk: &dyn DiskImage,
    vs: u64,
    mut t: T,
    jobs: &Mutex<Receiver<Window>>,
    done: SyncSender<Result<Window, ExportError>>,
) {
    loop {
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(mut w) = job else { return };
        let r = w.fill(disk, vs).and_then(|()| t.apply(&mut w)).map(|()| w);
        if done.send(r).is_err() {
            return;
        }
    }
}

/// The calling thread: send windows to the workers, consume them in order.
fn drive(
    map: &AllocMap,
    depth: usize,
    job_tx: SyncSender<Window>,
    done_rx: Receiver<Result<Window, ExportError>>,
    consume: &mut dyn FnMut(&Window) -> Result<(), ExportError>,
) -> Result<u64, ExportError> {
    let ended = || ExportError::Sink(std::io::Error::other("export workers ended"));
    let mut spare: Vec<Window> = Vec::with_capacity(depth);
    // Starts of the windows in flight, in order, and those back early.
    let mut order: VecDeque<u64> = VecDeque::with_capacity(depth);
    let mut back: Vec<Window> = Vec::with_capacity(depth);
    let (mut k, mut read) = (0usize, 0u64);
    loop {
        while k < map.words() && order.len() < depth {
            let mut w = spare.pop().unwrap_or_else(Window::empty);
            if plan(map, k, &mut w) {
                order.push_back(w.start);
                job_tx.send(w).map_err(|_| ended())?;
            } else {
                spare.push(w);
            }
            k += 1;
        }
        let Some(&next) = order.front() else {
            return Ok(read);
        };
        let w = match back.iter().position(|w| w.start == next) {
            Some(i) => back.swap_remove(i),
            None => {
                let w = done_rx.recv().map_err(|_| ended())??;
                if w.start != next {
                    back.push(w);
                    continue;
                }
                w
            }
        };
        order.pop_front();
        read += bytes_read(&w, map.virtual_size());
        consume(&w)?;
        spare.push(w);
    }
}
