//! Reading the guest disk of a validated qcow2 image: L1 → L2 → cluster,
//! with standard, zero, compressed and extended-L2 (subcluster) entries.
//!
//! The L1 table is loaded and every entry checked at open (it is bounded by
//! the header check and lies inside the file). L2 tables are read on demand
//! into a small LRU; their entries are checked when used, so a bad entry
//! fails the read that meets it, with `Corrupt`. Data is read straight from
//! the source, coalescing host-contiguous clusters into one read.

use std::sync::{Arc, Mutex};

use super::compress::Decompressor;
use super::header::Header;
use crate::bytes::u64_be;
use crate::util::{add, overlaps, read_exact_at};
use crate::{DiskImage, Extent, ExtentKind, FormatError, ImageInfo, ReadAt};

/// Offset bits of L1 and standard L2 entries (bits 9..=55).
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

/// Decompression states kept for reuse (one per concurrent reader).
const POOL: usize = 4;

/// Total memory the L2 cache may hold, and its entry bounds.
const CACHE_BYTES: u64 = 16 << 20;
const CACHE_MAX_TABLES: usize = 32;

/// What a uniform span of guest bytes maps to.
#[derive(Debug, Clone, Copy)]
enum Run {
    Zero,
    /// Host offset of the first byte of the span.
    Data(u64),
    /// A compressed cluster: host offset and the bytes to read from there.
    Compressed {
        coff: u64,
        clen: u64,
    },
}

struct CompressedCache {
    /// Host offset of the cluster held in `out`, if any.
    coff: Option<u64>,
    input: Vec<u8>,
    out: Vec<u8>,
    decoder: Decompressor,
}

struct L2Cache {
    tables: Vec<(u64, Arc<[u64]>, u64)>,
    tick: u64,
    capacity: usize,
}

/// An opened qcow2 image.
pub struct Qcow2Image {
    src: Arc<dyn ReadAt>,
    hdr: Header,
    info: ImageInfo,
    /// L2 table offsets for the L1 entries the virtual size needs (0 = none).
    l1: Vec<u64>,
    /// The same offsets, sorted, to refuse data clusters that overlap them.
    l2_sorted: Vec<u64>,
    /// Header cluster, L1 table and refcount table: no data may live there.
    reserved: [(u64, u64); 3],
    cache: Mutex<L2Cache>,
    /// Decompression states, each with the last cluster it inflated (so
    /// small reads do not inflate it again) and buffers and a decoder to
    /// reuse. A reader takes one out while it decompresses, so threads
    /// decompress in parallel; at most `POOL` are kept.
    compressed: Mutex<Vec<CompressedCache>>,
}

impl Qcow2Image {
    /// `hdr` must come from `Header::parse` on the same source (it is what
    /// makes the shifts and sizes used here safe).
    pub(crate) fn open(src: Arc<dyn ReadAt>, hdr: Header) -> Result<Self, FormatError> {
        let cs = hdr.cluster_size();
        let file_len = src.len();
        // The header check proved l1_bytes ≤ 32 MiB and inside the file.
        let needed = hdr.l1_needed as usize;
        let reserved = [
            (0, cs),
            (hdr.l1_table_offset, hdr.l1_bytes()),
            (hdr.refcount_table_offset, hdr.refcount_table_bytes()),
        ];
        // Read in 64 KiB pieces so the only large allocation is the decoded
        // table itself (≤ 32 MiB, and the file holds that many bytes).
        let mut l1 = Vec::with_capacity(needed);
        let mut raw = vec![0u8; 65536.min(needed * 8)];
        while l1.len() < needed {
            let n = (needed - l1.len()).min(raw.len() / 8);
            let at = hdr.l1_table_offset + l1.len() as u64 * 8;
            read_exact_at(&*src, at, &mut raw[..n * 8], "qcow2 L1 table")?;
            for e in raw[..n * 8].chunks_exact(8) {
                let i = l1.len();
                let off = u64_be(e, 0)? & OFFSET_MASK;
                if off != 0 {
                    if !off.is_multiple_of(cs) {
                        return Err(FormatError::Corrupt(format!(
                            "qcow2 L1 entry {i}: L2 table offset {off:#x} is not cluster aligned"
                        )));
                    }
                    let end = add(off, cs, "qcow2 L2 table end")?;
                    if end > file_len {
                        return Err(FormatError::Corrupt(format!(
                            "qcow2 L1 entry {i}: L2 table at {off:#x} lies outside the file"
                        )));
                    }
                    if reserved.iter().any(|&(o, l)| overlaps(off, cs, o, l)) {
                        return Err(FormatError::Corrupt(format!(
                            "qcow2 L1 entry {i}: L2 table at {off:#x} overlaps the header, L1 or refcount table"
                        )));
                    }
                }
                l1.push(off);
            }
        }
        let mut l2_sorted: Vec<u64> = l1.iter().copied().filter(|&o| o != 0).collect();
        l2_sorted.sort_unstable();
        if l2_sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(FormatError::Corrupt(
                "qcow2 two L1 entries share one L2 table".into(),
            ));
        }
        let capacity = ((CACHE_BYTES / cs) as usize).clamp(2, CACHE_MAX_TABLES);
        let info = ImageInfo {
            format: crate::Format::Qcow2,
            subformat: Some(format!("v{}", hdr.version)),
            virtual_size: hdr.size,
            file_size: file_len,
            cluster_size: Some(cs),
            // Whether any cluster is compressed is only known by reading
            // every L2 table; report what the header declares: zstd is
            // only ever set on purpose, zlib is the default of every image.
            compression: match hdr.compression {
                super::header::Compression::Zstd => Some("zstd".to_string()),
                super::header::Compression::Zlib => None,
            },
            notes: hdr.notes.clone(),
        };
        Ok(Qcow2Image {
            src,
            hdr,
            info,
            l1,
            l2_sorted,
            reserved,
            cache: Mutex::new(L2Cache {
                tables: Vec::with_capacity(capacity),
                tick: 0,
                capacity,
            }),
            compressed: Mutex::new(Vec::new()),
        })
    }

    pub fn header(&self) -> &Header {
        &self.hdr
    }

    /// The L2 table for L1 index `idx`, decoded to native u64s.
    fn l2_table(&self, idx: u64) -> Result<Option<Arc<[u64]>>, FormatError> {
        let off = match self.l1.get(idx as usize) {
            Some(&0) | None => return Ok(None),
            Some(&off) => off,
        };
        {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            c.tick += 1;
            let tick = c.tick;
            if let Some(entry) = c.tables.iter_mut().find(|t| t.0 == off) {
                entry.2 = tick;
                return Ok(Some(entry.1.clone()));
            }
        }
        let cs = self.hdr.cluster_size() as usize;
        let mut raw = vec![0u8; cs];
        read_exact_at(&*self.src, off, &mut raw, "qcow2 L2 table")?;
        let table: Arc<[u64]> = raw
            .chunks_exact(8)
            .map(|c| u64_be(c, 0))
            .collect::<Result<_, _>>()?;
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.tick += 1;
        let tick = c.tick;
        if c.tables.len() >= c.capacity {
            if let Some(lru) = c
                .tables
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| t.2)
                .map(|(i, _)| i)
            {
                c.tables.swap_remove(lru);
            }
        }
        c.tables.push((off, table.clone(), tick));
        Ok(Some(table))
    }

    /// A host data cluster must be aligned and clear of the metadata.
    fn check_host_cluster(&self, host: u64) -> Result<(), FormatError> {
        let cs = self.hdr.cluster_size();
        if !host.is_multiple_of(cs) {
            return Err(FormatError::Corrupt(format!(
                "qcow2 data cluster offset {host:#x} is not cluster aligned"
            )));
        }
        if host >= self.src.len() {
            return Err(FormatError::Corrupt(format!(
                "qcow2 data cluster at {host:#x} lies outside the file"
            )));
        }
        if self.reserved.iter().any(|&(o, l)| overlaps(host, cs, o, l))
            || self.l2_sorted.binary_search(&host).is_ok()
        {
            return Err(FormatError::Corrupt(format!(
                "qcow2 data cluster at {host:#x} overlaps metadata"
            )));
        }
        Ok(())
    }

    /// The uniform span starting `within` bytes into the cluster of L2
    /// index `i`: what it maps to and how many bytes (to the cluster end
    /// at most).
    fn entry_run(&self, l2: &[u64], i: usize, within: u64) -> Result<(Run, u64), FormatError> {
        let cs = self.hdr.cluster_size();
        let to_end = cs - within;
        if self.hdr.extended_l2 {
            let e = l2.get(2 * i).copied().unwrap_or(0);
            let bitmap = l2.get(2 * i + 1).copied().unwrap_or(0);
            if e & L2_COMPRESSED != 0 {
                return self.compressed_run(e, to_end);
            }
            let alloc = bitmap as u32;
            let zero = (bitmap >> 32) as u32;
            if alloc & zero != 0 {
                return Err(FormatError::Corrupt(
                    "qcow2 subcluster both allocated and zero".into(),
                ));
            }
            let sc_size = cs / 32;
            let first = (within / sc_size) as u32;
            let state = alloc >> first & 1;
            let mut last = first;
            while last + 1 < 32 && (alloc >> (last + 1) & 1) == state {
                last += 1;
            }
            let len = u64::from(last + 1) * sc_size - within;
            if state == 0 {
                return Ok((Run::Zero, len));
            }
            let host = e & OFFSET_MASK;
            if host == 0 {
                return Err(FormatError::Corrupt(
                    "qcow2 allocated subcluster without a host cluster".into(),
                ));
            }
            self.check_host_cluster(host)?;
            return Ok((Run::Data(host + within), len));
        }
        let e = l2.get(i).copied().unwrap_or(0);
        if e & L2_COMPRESSED != 0 {
            return self.compressed_run(e, to_end);
        }
        if e & L2_ZERO != 0 {
            if self.hdr.version < 3 {
                return Err(FormatError::Corrupt(
                    "qcow2 zero cluster flag in a version 2 image".into(),
                ));
            }
            return Ok((Run::Zero, to_end));
        }
        let host = e & OFFSET_MASK;
        if host == 0 {
            return Ok((Run::Zero, to_end));
        }
        self.check_host_cluster(host)?;
        Ok((Run::Data(host + within), to_end))
    }

    fn compressed_run(&self, e: u64, to_end: u64) -> Result<(Run, u64), FormatError> {
        let cb = self.hdr.cluster_bits;
        let csize_shift = 62 - (cb - 8);
        let csize_mask = (1u64 << (cb - 8)) - 1;
        let offset_mask = (1u64 << csize_shift) - 1;
        let coff = e & offset_mask;
        let sectors = ((e >> csize_shift) & csize_mask) + 1;
        let clen = sectors * 512 - (coff & 511);
        let file_len = self.src.len();
        if coff < self.hdr.cluster_size() || coff >= file_len {
            return Err(FormatError::Corrupt(format!(
                "qcow2 compressed cluster at {coff:#x} lies outside the data area"
            )));
        }
        // The size is an upper bound in whole sectors; the last cluster of
        // a file may end before it.
        let clen = clen.min(file_len - coff);
        Ok((Run::Compressed { coff, clen }, to_end))
    }

    /// Walk the uniform spans of `[offset, offset+len)`, calling `f` for
    /// each (guest offset, length, run). Stops early when `f` returns false,
    /// or before loading more than `max_tables` L2 tables (`extent_at` uses
    /// this so one call never reads metadata from all over the file: with a
    /// source that is still arriving, it would wait for the whole download).
    fn walk(
        &self,
        offset: u64,
        len: u64,
        max_tables: usize,
        mut f: impl FnMut(u64, u64, Run) -> Result<bool, FormatError>,
    ) -> Result<(), FormatError> {
        let mut tables = 0usize;
        let cs = self.hdr.cluster_size();
        let cov = self.hdr.l2_coverage();
        let end = offset.saturating_add(len).min(self.hdr.size);
        let mut pos = offset;
        while pos < end {
            let l1_idx = pos / cov;
            let region_end = ((l1_idx + 1).saturating_mul(cov)).min(end);
            if self.l1.get(l1_idx as usize).is_some_and(|&o| o != 0) {
                if tables == max_tables {
                    return Ok(());
                }
                tables += 1;
            }
            match self.l2_table(l1_idx)? {
                None => {
                    if !f(pos, region_end - pos, Run::Zero)? {
                        return Ok(());
                    }
                    pos = region_end;
                }
                Some(t) => {
                    while pos < region_end {
                        let i = ((pos % cov) / cs) as usize;
                        let within = pos % cs;
                        let (run, n) = self.entry_run(&t, i, within)?;
                        let n = n.min(region_end - pos);
                        if !f(pos, n, run)? {
                            return Ok(());
                        }
                        pos += n;
                    }
                }
            }
        }
        Ok(())
    }

    fn read_compressed(
        &self,
        coff: u64,
        clen: u64,
        within: u64,
        dst: &mut [u8],
    ) -> Result<(), FormatError> {
        let w = within as usize;
        let span = |out: &[u8], dst: &mut [u8]| -> Result<(), FormatError> {
            let src = out
                .get(w..w + dst.len())
                .ok_or_else(|| FormatError::Corrupt("qcow2 compressed span".into()))?;
            dst.copy_from_slice(src);
            Ok(())
        };
        // A hit is served under the lock (a copy of at most one cluster);
        // a miss takes a state out of the pool and decompresses without it.
        let mut state = {
            let mut pool = self.compressed.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = pool.iter().find(|c| c.coff == Some(coff)) {
                return span(&hit.out, dst);
            }
            if pool.is_empty() {
                CompressedCache {
                    coff: None,
                    input: Vec::new(),
                    out: Vec::new(),
                    decoder: Decompressor::new(self.hdr.compression),
                }
            } else {
                // The least recently used; the newest clusters stay cached.
                pool.remove(0)
            }
        };
        let cs = self.hdr.cluster_size() as usize;
        state.coff = None;
        // ≤ 2 clusters of input by construction of the size field; the
        // buffers are reused from one cluster to the next.
        state.input.resize(clen as usize, 0);
        read_exact_at(
            &*self.src,
            coff,
            &mut state.input,
            "qcow2 compressed cluster",
        )?;
        state.out.resize(cs, 0);
        state.decoder.decompress(&state.input, &mut state.out)?;
        state.coff = Some(coff);
        let r = span(&state.out, dst);
        let mut pool = self.compressed.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL {
            // Most recently used last.
            pool.push(state);
        }
        r
    }
}

impl DiskImage for Qcow2Image {
    fn info(&self) -> &ImageInfo {
        &self.info
    }

    fn extent_at(&self, offset: u64, max_len: u64) -> Result<Extent, FormatError> {
        if offset >= self.hdr.size {
            return Err(FormatError::Corrupt(format!(
                "extent at {offset} beyond the virtual size"
            )));
        }
        let mut kind: Option<ExtentKind> = None;
        let mut len = 0u64;
        self.walk(offset, max_len, 1, |_, n, run| {
            let k = match run {
                Run::Zero => ExtentKind::Zero,
                _ => ExtentKind::Data,
            };
            match kind {
                Some(prev) if prev != k => return Ok(false),
                _ => kind = Some(k),
            }
            len += n;
            Ok(true)
        })?;
        Ok(Extent {
            offset,
            len,
            kind: kind.unwrap_or(ExtentKind::Zero),
        })
    }

    fn read_guest(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let total = buf.len() as u64;
        let end = add(offset, total, "guest read")?;
        if end > self.hdr.size {
            return Err(FormatError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the guest disk",
            )));
        }
        let cs = self.hdr.cluster_size();
        // Host-contiguous data spans are gathered into one read.
        let mut pending: Option<(usize, u64, usize)> = None;
        let flush = |p: &mut Option<(usize, u64, usize)>, buf: &mut [u8]| {
            if let Some((b, host, n)) = p.take() {
                read_exact_at(&*self.src, host, &mut buf[b..b + n], "qcow2 data cluster")?;
            }
            Ok::<(), FormatError>(())
        };
        let mut err = None;
        self.walk(offset, total, usize::MAX, |pos, n, run| {
            let b = (pos - offset) as usize;
            let n_us = n as usize;
            let r = (|| {
                match run {
                    Run::Zero => {
                        flush(&mut pending, buf)?;
                        buf[b..b + n_us].fill(0);
                    }
                    Run::Data(host) => match &mut pending {
                        Some((pb, ph, pn)) if *ph + *pn as u64 == host && *pb + *pn == b => {
                            *pn += n_us;
                        }
                        _ => {
                            flush(&mut pending, buf)?;
                            pending = Some((b, host, n_us));
                        }
                    },
                    Run::Compressed { coff, clen } => {
                        flush(&mut pending, buf)?;
                        self.read_compressed(coff, clen, pos % cs, &mut buf[b..b + n_us])?;
                    }
                }
                Ok::<(), FormatError>(())
            })();
            match r {
                Ok(()) => Ok(true),
                Err(e) => {
                    err = Some(e);
                    Ok(false)
                }
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        flush(&mut pending, buf)
    }
}
