//! The qcow2 writer: the stored form of every imported image, produced
//! straight into an append-only blob.
//!
//! Layout: a head region (header cluster, L1 table, refcount table, zero
//! padding up to `head_len`) whose bytes are only known at the end, then an
//! append-only stream: data clusters in the order they arrive, and at
//! `finish` the L2 tables and refcount blocks. The sink never seeks; the
//! caller writes the returned head bytes at offset 0 (a local file's
//! `pwrite`, or the first part of an S3 multipart upload, which is why the
//! head may be padded to `min_head_len`).
//!
//! Memory: 16 bytes per written cluster in each touched 512 MiB of guest
//! space, up to a 64 KiB L2 table once a quarter of it is written (so a
//! sparse disk costs what it holds, not what its virtual size spans), plus a
//! 2 MiB append buffer. Refcounts are computed at `finish` one block at a
//! time, since every appended cluster has refcount 1.

use std::collections::BTreeMap;

use crate::util::{align_up, div_ceil};
use crate::FormatError;

/// Where the appended stream goes. Writes arrive in file order, starting at
/// file offset `head_len`.
pub trait AppendSink {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()>;
    /// True when the sink gathers small appends into large writes itself:
    /// the writer then hands it each cluster as is, instead of copying
    /// clusters into a buffer of its own first (one copy of every byte
    /// fewer).
    fn buffers_appends(&self) -> bool {
        false
    }
}

impl AppendSink for Vec<u8> {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(data);
        Ok(())
    }
}

impl<T: AppendSink + ?Sized> AppendSink for &mut T {
    fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
        (**self).append(data)
    }
    fn buffers_appends(&self) -> bool {
        (**self).buffers_appends()
    }
}

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const L2_ENTRIES: u64 = CLUSTER / 8;
const L2_COVERAGE: u64 = L2_ENTRIES * CLUSTER;
/// refcount_bits = 16: one refcount block covers this many clusters.
const RB_ENTRIES: u64 = CLUSTER / 2;
const COPIED: u64 = 1 << 63;
const BUFFER: usize = 2 << 20;
/// An L2 table is kept as (index, entry) pairs up to this many entries (a
/// quarter of the table, 32 KiB), then as the table itself.
const SPARSE_MAX: usize = (L2_ENTRIES / 4) as usize;

/// The entries of one L2 table written so far.
enum L2Table {
    /// Sorted by index.
    Sparse(Vec<(u16, u64)>),
    Dense(Box<[u64]>),
}

impl L2Table {
    /// Sets entry `idx`; false if it was set already.
    fn set(&mut self, idx: usize, entry: u64) -> bool {
        match self {
            L2Table::Dense(t) => {
                if t[idx] != 0 {
                    return false;
                }
                t[idx] = entry;
            }
            L2Table::Sparse(v) => {
                // Clusters mostly arrive in order: the search ends at once.
                let at = match v.last() {
                    Some(&(last, _)) if (last as usize) < idx => v.len(),
                    _ => match v.binary_search_by_key(&(idx as u16), |&(i, _)| i) {
                        Ok(_) => return false,
                        Err(at) => at,
                    },
                };
                v.insert(at, (idx as u16, entry));
                if v.len() > SPARSE_MAX {
                    let mut t = vec![0u64; L2_ENTRIES as usize].into_boxed_slice();
                    for &(i, e) in v.iter() {
                        t[i as usize] = e;
                    }
                    *self = L2Table::Dense(t);
                }
            }
        }
        true
    }

    /// The table as it is stored: big-endian entries.
    fn render(&self, out: &mut [u8]) {
        out.fill(0);
        let mut put = |i: usize, e: u64| out[i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
        match self {
            L2Table::Dense(t) => t.iter().enumerate().for_each(|(i, &e)| put(i, e)),
            L2Table::Sparse(v) => v.iter().for_each(|&(i, e)| put(i as usize, e)),
        }
    }
}

/// Totals of a finished image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    pub file_size: u64,
    pub data_clusters: u64,
    pub l2_tables: u64,
}

/// Writes a qcow2 v3 image (64 KiB clusters, refcount_bits 16, no
/// compression) from guest clusters handed in any order.
pub struct Qcow2Writer<S: AppendSink> {
    sink: S,
    virtual_size: u64,
    /// The size recorded in the header: rounded up to 512 as qemu requires.
    header_size: u64,
    l1_size: u64,
    l1_clusters: u64,
    rt_clusters: u64,
    head_len: u64,
    /// Bytes accepted for the stream (flushed or still in `buf`).
    appended: u64,
    buf: Vec<u8>,
    l2: BTreeMap<u64, L2Table>,
    data_clusters: u64,
}

fn io(e: std::io::Error) -> FormatError {
    FormatError::Io(e)
}

impl<S: AppendSink> Qcow2Writer<S> {
    /// qcow2 v3, 64 KiB clusters, refcount_bits 16, no compression.
    /// `min_head_len`: the head region is at least this long (an S3 first
    /// part must be ≥ 5 MiB; local files pass 0).
    pub fn new(sink: S, virtual_size: u64, min_head_len: u64) -> Result<Self, FormatError> {
        let header_size = align_up(virtual_size, 512, "virtual size")?;
        let l1_size = div_ceil(header_size, L2_COVERAGE);
        let l1_bytes = l1_size * 8;
        if l1_bytes > super::header::MAX_L1_BYTES {
            return Err(FormatError::TooLarge(format!(
                "virtual size {virtual_size} needs an L1 table larger than qcow2 allows"
            )));
        }
        // An empty disk has no L1 table at all: a cluster reserved for one
        // would be unreferenced, which qemu-img check reports as a leak.
        let l1_clusters = div_ceil(l1_bytes, CLUSTER);
        let min_head_clusters = div_ceil(align_up(min_head_len, CLUSTER, "head length")?, CLUSTER);
        let data_max = div_ceil(virtual_size, CLUSTER);
        // The refcount table must be sized for the largest file this disk
        // can become; find the fixed point (it is reached in a step or two).
        let mut rt_clusters = 1u64;
        loop {
            let head_clusters = (1 + l1_clusters + rt_clusters).max(min_head_clusters);
            let base = head_clusters + data_max + l1_size;
            let mut rb = div_ceil(base, RB_ENTRIES);
            while div_ceil(base + rb, RB_ENTRIES) > rb {
                rb += 1;
            }
            let need = div_ceil(rb * 8, CLUSTER).max(1);
            if need <= rt_clusters {
                break;
            }
            rt_clusters = need;
        }
        let head_clusters = (1 + l1_clusters + rt_clusters).max(min_head_clusters);
        Ok(Qcow2Writer {
            sink,
            virtual_size,
            header_size,
            l1_size,
            l1_clusters,
            rt_clusters,
            head_len: head_clusters * CLUSTER,
            appended: 0,
            buf: Vec::new(),
            l2: BTreeMap::new(),
            data_clusters: 0,
        })
    }

    pub fn cluster_size(&self) -> u64 {
        CLUSTER
    }

    /// The sink's first appended byte lands at this file offset.
    pub fn head_len(&self) -> u64 {
        self.head_len
    }

    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// File size so far (head plus everything appended).
    pub fn bytes_written(&self) -> u64 {
        self.head_len + self.appended
    }

    fn push(&mut self, data: &[u8]) -> Result<(), FormatError> {
        if self.sink.buffers_appends() {
            self.sink.append(data).map_err(io)?;
            self.appended += data.len() as u64;
            return Ok(());
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(BUFFER + CLUSTER as usize);
        }
        self.buf.extend_from_slice(data);
        self.appended += data.len() as u64;
        if self.buf.len() >= BUFFER {
            self.sink.append(&self.buf).map_err(io)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn push_zeros(&mut self, n: usize) -> Result<(), FormatError> {
        const Z: [u8; 4096] = [0; 4096];
        let mut left = n;
        while left > 0 {
            let k = left.min(Z.len());
            self.push(&Z[..k])?;
            left -= k;
        }
        Ok(())
    }

    /// One cluster of guest data at a cluster-aligned guest offset, any
    /// order, each at most once. `data.len()` is the cluster size, except
    /// for the final cluster of a disk whose size is not a multiple of it
    /// (then exactly the remainder). All-zero clusters should be skipped by
    /// the caller: they stay unallocated.
    pub fn write_cluster(&mut self, guest_offset: u64, data: &[u8]) -> Result<(), FormatError> {
        if !guest_offset.is_multiple_of(CLUSTER) || guest_offset >= self.virtual_size {
            return Err(FormatError::Corrupt(format!(
                "qcow2 writer: guest offset {guest_offset} is not a cluster inside the disk"
            )));
        }
        let expect = (self.virtual_size - guest_offset).min(CLUSTER);
        if data.len() as u64 != expect {
            return Err(FormatError::Corrupt(format!(
                "qcow2 writer: cluster at {guest_offset} has {} bytes, expected {expect}",
                data.len()
            )));
        }
        let l1_idx = guest_offset / L2_COVERAGE;
        let l2_idx = ((guest_offset % L2_COVERAGE) / CLUSTER) as usize;
        let host = self.head_len + self.appended;
        let table = self
            .l2
            .entry(l1_idx)
            .or_insert_with(|| L2Table::Sparse(Vec::new()));
        if !table.set(l2_idx, host | COPIED) {
            return Err(FormatError::Corrupt(format!(
                "qcow2 writer: cluster at guest offset {guest_offset} written twice"
            )));
        }
        self.push(data)?;
        if (data.len() as u64) < CLUSTER {
            self.push_zeros(CLUSTER as usize - data.len())?;
        }
        self.data_clusters += 1;
        Ok(())
    }

    /// Appends the L2 tables and refcount blocks; returns the sink and the
    /// head bytes (exactly `head_len` long) to be written at offset 0.
    pub fn finish(mut self) -> Result<(S, Vec<u8>, WriteStats), FormatError> {
        let mut l1 = vec![0u64; self.l1_size as usize];
        let tables = std::mem::take(&mut self.l2);
        let l2_tables = tables.len() as u64;
        let mut raw = vec![0u8; CLUSTER as usize];
        for (idx, table) in tables {
            let host = self.head_len + self.appended;
            table.render(&mut raw);
            self.push(&raw)?;
            l1[idx as usize] = host | COPIED;
        }

        // Refcount blocks cover the whole file, themselves included.
        let head_clusters = self.head_len / CLUSTER;
        let used_head = 1 + self.l1_clusters + self.rt_clusters;
        let end_clusters = (self.head_len + self.appended) / CLUSTER;
        let mut rb = div_ceil(end_clusters, RB_ENTRIES).max(1);
        while div_ceil(end_clusters + rb, RB_ENTRIES) > rb {
            rb += 1;
        }
        if rb > self.rt_clusters * (CLUSTER / 8) {
            return Err(FormatError::Corrupt(
                "qcow2 writer: refcount table too small (more data than the virtual size allows)"
                    .into(),
            ));
        }
        let total = end_clusters + rb;
        let mut rt = Vec::with_capacity(rb as usize);
        for k in 0..rb {
            rt.push((end_clusters + k) * CLUSTER);
            for (j, dst) in raw.chunks_exact_mut(2).enumerate() {
                let c = k * RB_ENTRIES + j as u64;
                let refcount: u16 = if c < total && (c < used_head || c >= head_clusters) {
                    1
                } else {
                    0
                };
                dst.copy_from_slice(&refcount.to_be_bytes());
            }
            self.push(&raw)?;
        }
        if !self.buf.is_empty() {
            self.sink.append(&self.buf).map_err(io)?;
            self.buf.clear();
        }

        let mut head = vec![0u8; self.head_len as usize];
        let l1_off = CLUSTER;
        let rt_off = (1 + self.l1_clusters) * CLUSTER;
        let h = &mut head[..112];
        h[0..4].copy_from_slice(super::header::MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
        h[24..32].copy_from_slice(&self.header_size.to_be_bytes());
        h[36..40].copy_from_slice(&(self.l1_size as u32).to_be_bytes());
        h[40..48].copy_from_slice(&l1_off.to_be_bytes());
        h[48..56].copy_from_slice(&rt_off.to_be_bytes());
        h[56..60].copy_from_slice(&(self.rt_clusters as u32).to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes()); // refcount_order
        h[100..104].copy_from_slice(&112u32.to_be_bytes()); // header_length
                                                            // Byte 104 (compression type) stays 0 = zlib; 112.. is the
                                                            // end-of-extensions marker (zero).
        for (i, e) in l1.iter().enumerate() {
            let o = l1_off as usize + i * 8;
            head[o..o + 8].copy_from_slice(&e.to_be_bytes());
        }
        for (i, e) in rt.iter().enumerate() {
            let o = rt_off as usize + i * 8;
            head[o..o + 8].copy_from_slice(&e.to_be_bytes());
        }
        let stats = WriteStats {
            file_size: self.head_len + self.appended,
            data_clusters: self.data_clusters,
            l2_tables,
        };
        Ok((self.sink, head, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, SliceSource};
    use std::sync::Arc;

    fn assemble(head: Vec<u8>, tail: Vec<u8>) -> Vec<u8> {
        let mut f = head;
        f.extend_from_slice(&tail);
        f
    }

    /// A sink that gathers appends itself, and counts how it was called.
    struct Gathering {
        bytes: Vec<u8>,
        calls: usize,
    }

    impl AppendSink for Gathering {
        fn append(&mut self, data: &[u8]) -> std::io::Result<()> {
            self.bytes.extend_from_slice(data);
            self.calls += 1;
            Ok(())
        }
        fn buffers_appends(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_gathering_sink_gets_clusters_directly_and_the_same_bytes() {
        let vs = 2 * L2_COVERAGE + 1000;
        fn write<S: AppendSink>(w: &mut Qcow2Writer<S>, vs: u64) {
            for (i, g) in [L2_COVERAGE, 0, 2 * L2_COVERAGE].into_iter().enumerate() {
                let len = (vs - g).min(CLUSTER) as usize;
                w.write_cluster(g, &vec![i as u8 + 1; len]).unwrap();
            }
        }
        let mut plain = Qcow2Writer::new(Vec::new(), vs, 0).unwrap();
        write(&mut plain, vs);
        let (plain_tail, plain_head, _) = plain.finish().unwrap();
        let sink = Gathering {
            bytes: Vec::new(),
            calls: 0,
        };
        let mut direct = Qcow2Writer::new(sink, vs, 0).unwrap();
        write(&mut direct, vs);
        assert!(direct.buf.capacity() == 0, "no buffer of its own");
        let (sink, head, _) = direct.finish().unwrap();
        assert_eq!(head, plain_head);
        assert_eq!(sink.bytes, plain_tail);
        // Three data clusters (the last one padded), then the tables.
        assert!(sink.calls >= 3);
    }

    /// Tables fill sparse then dense, in any order; every entry lands and a
    /// second write of a cluster is refused either way.
    #[test]
    fn l2_tables_go_from_sparse_to_dense() {
        let mut t = L2Table::Sparse(Vec::new());
        let order: Vec<usize> = (0..L2_ENTRIES as usize).rev().step_by(3).collect();
        for (n, &i) in order.iter().enumerate() {
            assert!(t.set(i, (i as u64 + 1) << 16));
            assert_eq!(
                matches!(t, L2Table::Dense(_)),
                n + 1 > SPARSE_MAX,
                "after {n}"
            );
            assert!(!t.set(i, 7), "twice");
        }
        let mut raw = vec![1u8; CLUSTER as usize];
        t.render(&mut raw);
        for i in 0..L2_ENTRIES as usize {
            let e = crate::bytes::u64_be(&raw, i * 8).unwrap();
            let want = if order.contains(&i) {
                (i as u64 + 1) << 16
            } else {
                0
            };
            assert_eq!(e, want, "entry {i}");
        }
    }

    #[test]
    fn round_trip_through_own_reader() {
        let vs = 3 * L2_COVERAGE + 12345 * 512 + 100;
        let mut w = Qcow2Writer::new(Vec::new(), vs, 5 << 20).unwrap();
        assert_eq!(w.head_len(), 5 << 20);
        let last = (vs / CLUSTER) * CLUSTER;
        let tail_data = vec![7u8; (vs - last) as usize];
        w.write_cluster(last, &tail_data).unwrap();
        w.write_cluster(0, &[1u8; CLUSTER as usize]).unwrap();
        w.write_cluster(2 * L2_COVERAGE, &[2u8; CLUSTER as usize])
            .unwrap();
        assert!(w.write_cluster(0, &[1u8; CLUSTER as usize]).is_err());
        assert!(w.write_cluster(100, &[1u8; CLUSTER as usize]).is_err());
        assert!(w.write_cluster(CLUSTER, &[1u8; 10]).is_err());
        let (tail, head, stats) = w.finish().unwrap();
        assert_eq!(head.len() as u64, 5 << 20);
        assert_eq!(stats.data_clusters, 3);
        assert_eq!(stats.l2_tables, 3);
        let file = assemble(head, tail);
        assert_eq!(file.len() as u64, stats.file_size);
        let file: &'static [u8] = Box::leak(file.into_boxed_slice());
        let img = crate::qcow2::open(Arc::new(SliceSource(file)), &Limits::default()).unwrap();
        assert_eq!(img.virtual_size(), align_up(vs, 512, "").unwrap());
        let mut b = vec![0u8; CLUSTER as usize];
        img.read_guest(0, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 1));
        img.read_guest(2 * L2_COVERAGE, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 2));
        img.read_guest(CLUSTER, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        let mut t = vec![0u8; (vs - last) as usize];
        img.read_guest(last, &mut t).unwrap();
        assert_eq!(t, tail_data);
    }
}
