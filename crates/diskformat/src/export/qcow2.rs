//! QCOW2 (version 3) export, written strictly sequentially.
//!
//! Contract: 64 KiB clusters, refcount_bits 16, no extensions, no
//! compression. Everything is planned from the allocation map before the
//! first byte, so the file is laid out in the order it is written:
//!
//!   header | L1 | refcount table | refcount blocks | L2 tables | data
//!
//! Data clusters are the source's allocated units in guest order; an L2
//! table exists for each 512 MiB of guest space holding any. Every cluster
//! of the file is used exactly once (refcount 1, COPIED set), so
//! `qemu-img check` finds no leak. An allocated unit that reads as zeros
//! still has its cluster (the L2 table was written before the data was
//! read) but it is written with `write_zeros`: a hole in a file.
//! Memory: one 64 KiB table buffer. Threat model: see `export`; every size
//! here derives from the virtual size, bounded by the reader's limits.

use super::map::{AllocMap, UNIT};
use super::pipeline::{run, Out, Plain, Window};
use super::{ExportError, ExportOptions};
use crate::util::is_zero;
use crate::DiskImage;

const CLUSTER: u64 = UNIT;
const CLUSTER_BITS: u32 = 16;
/// L2 entries per table, and so units per L1 entry.
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Clusters one refcount block covers (16-bit refcounts).
const RB_ENTRIES: u64 = CLUSTER / 2;
const COPIED: u64 = 1 << 63;
const HEADER_LEN: u32 = 104;

/// Cluster counts and where each region starts (in clusters).
struct Layout {
    l1_entries: u64,
    l1_clusters: u64,
    rt_clusters: u64,
    rb_clusters: u64,
    l2_tables: u64,
    total: u64,
}

impl Layout {
    fn plan(map: &AllocMap) -> Self {
        let l1_entries = map.units().div_ceil(L2_ENTRIES);
        let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER).max(1);
        let l2_tables = (0..l1_entries)
            .filter(|&i| map.count(i * L2_ENTRIES, (i + 1) * L2_ENTRIES) > 0)
            .count() as u64;
        let fixed = 1 + l1_clusters + l2_tables + map.count(0, map.units());
        // The refcount metadata counts itself: iterate to the fixed point
        // (two or three rounds).
        let (mut rt, mut rb) = (1u64, 1u64);
        loop {
            let total = fixed + rt + rb;
            let rb2 = total.div_ceil(RB_ENTRIES);
            let rt2 = (rb2 * 8).div_ceil(CLUSTER);
            if (rb2, rt2) == (rb, rt) {
                break;
            }
            (rb, rt) = (rb2.max(rb), rt2.max(rt));
        }
        Layout {
            l1_entries,
            l1_clusters,
            rt_clusters: rt,
            rb_clusters: rb,
            l2_tables,
            total: fixed + rt + rb,
        }
    }

    fn l1_at(&self) -> u64 {
        1
    }
    fn rt_at(&self) -> u64 {
        self.l1_at() + self.l1_clusters
    }
    fn rb_at(&self) -> u64 {
        self.rt_at() + self.rt_clusters
    }
    fn l2_at(&self) -> u64 {
        self.rb_at() + self.rb_clusters
    }
    fn data_at(&self) -> u64 {
        self.l2_at() + self.l2_tables
    }
}

pub(super) fn write(
    disk: &dyn DiskImage,
    map: &AllocMap,
    out: &mut Out<'_>,
    opts: &ExportOptions,
) -> Result<u64, ExportError> {
    let lay = Layout::plan(map);
    write_metadata(map, &lay, out)?;
    let read = run(disk, map, opts.workers, &|| Plain, &mut |w: &Window| {
        write_data(out, w)?;
        out.progress(w.start + w.len as u64)
    })?;
    if out.pos() != lay.total * CLUSTER {
        return Err(ExportError::Sink(std::io::Error::other(format!(
            "qcow2 export: wrote {} bytes, planned {}",
            out.pos(),
            lay.total * CLUSTER
        ))));
    }
    Ok(read)
}

fn header(map: &AllocMap, lay: &Layout) -> Vec<u8> {
    let mut h = vec![0u8; CLUSTER as usize];
    let mut put = |at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
    put(0, b"QFI\xfb");
    put(4, &3u32.to_be_bytes());
    put(20, &CLUSTER_BITS.to_be_bytes());
    put(24, &map.virtual_size().to_be_bytes());
    put(36, &(lay.l1_entries as u32).to_be_bytes());
    put(40, &(lay.l1_at() * CLUSTER).to_be_bytes());
    put(48, &(lay.rt_at() * CLUSTER).to_be_bytes());
    put(56, &(lay.rt_clusters as u32).to_be_bytes());
    put(96, &4u32.to_be_bytes()); // refcount_order: 16-bit refcounts
    put(100, &HEADER_LEN.to_be_bytes());
    // Header extensions end at once: the zero bytes at 104 are the end mark.
    h
}

/// Header, L1, refcount table and blocks, L2 tables: all before the data.
fn write_metadata(map: &AllocMap, lay: &Layout, out: &mut Out<'_>) -> Result<(), ExportError> {
    if lay.l1_entries > u64::from(u32::MAX) / 8 {
        return Err(ExportError::Unsupported("disk too large for qcow2".into()));
    }
    out.write(&header(map, lay))?;
    let mut buf = vec![0u8; CLUSTER as usize];

    // L1: one entry per 512 MiB; tables numbered in order of use.
    let mut table = 0u64;
    let mut l1 = Vec::with_capacity((lay.l1_clusters * CLUSTER) as usize);
    for i in 0..lay.l1_entries {
        let e = if map.count(i * L2_ENTRIES, (i + 1) * L2_ENTRIES) > 0 {
            table += 1;
            ((lay.l2_at() + table - 1) * CLUSTER) | COPIED
        } else {
            0
        };
        l1.extend_from_slice(&e.to_be_bytes());
    }
    l1.resize((lay.l1_clusters * CLUSTER) as usize, 0);
    out.write(&l1)?;
    drop(l1);

    // Refcount table, then blocks: every cluster of the file has count 1.
    let mut rt = Vec::with_capacity((lay.rt_clusters * CLUSTER) as usize);
    for b in 0..lay.rb_clusters {
        rt.extend_from_slice(&((lay.rb_at() + b) * CLUSTER).to_be_bytes());
    }
    rt.resize((lay.rt_clusters * CLUSTER) as usize, 0);
    out.write(&rt)?;
    drop(rt);
    for b in 0..lay.rb_clusters {
        let used = (lay.total - b * RB_ENTRIES).min(RB_ENTRIES) as usize;
        buf.fill(0);
        for e in buf[..used * 2].chunks_mut(2) {
            e.copy_from_slice(&1u16.to_be_bytes());
        }
        out.write(&buf)?;
    }

    // L2 tables: data clusters follow in guest order.
    let mut next_data = lay.data_at();
    for i in 0..lay.l1_entries {
        let first = i * L2_ENTRIES;
        if map.count(first, first + L2_ENTRIES) == 0 {
            continue;
        }
        buf.fill(0);
        for j in 0..L2_ENTRIES.min(map.units() - first) {
            if map.is_set(first + j) {
                let e = (next_data * CLUSTER) | COPIED;
                buf[j as usize * 8..j as usize * 8 + 8].copy_from_slice(&e.to_be_bytes());
                next_data += 1;
            }
        }
        out.write(&buf)?;
    }
    Ok(())
}

/// The allocated units of `w` as clusters (zero ones as holes).
fn write_data(out: &mut Out<'_>, w: &Window) -> Result<(), ExportError> {
    let mut run_from: Option<usize> = None;
    let mut run_to = 0usize;
    for (i, _, unit) in w.units() {
        if !w.allocated(i) {
            continue;
        }
        let b = i as usize * CLUSTER as usize;
        let zero = is_zero(unit);
        // A data run continues only over adjacent data clusters.
        if let Some(from) = run_from {
            if zero || run_to != b {
                out.write(&w.data[from..run_to])?;
                run_from = None;
            }
        }
        if zero {
            out.zeros(CLUSTER)?;
        } else {
            run_from.get_or_insert(b);
            run_to = b + CLUSTER as usize;
        }
    }
    if let Some(from) = run_from {
        out.write(&w.data[from..run_to])?;
    }
    Ok(())
}
