//! The newest chunks of the download, in memory, in source order.
//!
//! Chunks are kept as the HTTP client handed them over (`Bytes`: no copy);
//! the hasher, the keeper thread and the readers all read the same memory.
//! The ring is contiguous: it holds `[start, end)` of the source with no
//! gap, because chunks are only ever pushed at the end and popped from the
//! front.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Default)]
pub(super) struct Ring {
    chunks: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl Ring {
    /// Bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn len(&self) -> usize {
        self.chunks.len()
    }

    /// The oldest chunk: its offset and bytes.
    pub(super) fn front(&self) -> Option<&(u64, Bytes)> {
        self.chunks.front()
    }

    /// Appends the chunk that starts where the ring ends.
    pub(super) fn push(&mut self, at: u64, chunk: Bytes) {
        debug_assert!(self
            .chunks
            .back()
            .is_none_or(|(o, b)| o + b.len() as u64 == at));
        self.bytes += chunk.len();
        self.chunks.push_back((at, chunk));
    }

    pub(super) fn pop_front(&mut self) {
        if let Some((_, b)) = self.chunks.pop_front() {
            self.bytes -= b.len();
        }
    }

    /// The first source offset held (`frontier` when the ring is empty).
    pub(super) fn start_or(&self, frontier: u64) -> u64 {
        self.chunks.front().map(|(o, _)| *o).unwrap_or(frontier)
    }

    /// The chunk that starts at `at`, if the ring holds one.
    pub(super) fn chunk_at(&self, at: u64) -> Option<Bytes> {
        let i = self.chunks.partition_point(|(o, _)| *o < at);
        match self.chunks.get(i) {
            Some((o, b)) if *o == at => Some(b.clone()),
            _ => None,
        }
    }

    /// The pieces of the ring that cover `[from, end)` (the caller clips
    /// `from` to the ring's start), in order, as (offset, chunk) pairs.
    pub(super) fn covering(&self, from: u64, end: u64) -> Vec<(u64, Bytes)> {
        let first = self
            .chunks
            .partition_point(|(o, b)| o + b.len() as u64 <= from);
        self.chunks
            .iter()
            .skip(first)
            .take_while(|(o, _)| *o < end)
            .map(|(o, b)| (*o, b.clone()))
            .collect()
    }
}

/// Copies what `pieces` (from [`Ring::covering`]) hold of `[offset,
/// offset + buf.len())` into `buf`.
pub(super) fn copy_pieces(pieces: &[(u64, Bytes)], offset: u64, buf: &mut [u8]) {
    let end = offset + buf.len() as u64;
    for (at, b) in pieces {
        let from = offset.max(*at);
        let to = end.min(at + b.len() as u64);
        if from >= to {
            continue;
        }
        let src = &b[(from - at) as usize..(to - at) as usize];
        buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_and_copy_agree_with_the_data() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut ring = Ring::default();
        for (i, piece) in data.chunks(70).enumerate() {
            ring.push(i as u64 * 70, Bytes::copy_from_slice(piece));
        }
        ring.pop_front();
        ring.pop_front();
        assert_eq!(ring.start_or(1000), 140);
        assert_eq!(ring.bytes(), 860);
        for (from, to) in [
            (140u64, 141u64),
            (150, 400),
            (209, 211),
            (999, 1000),
            (140, 1000),
        ] {
            let pieces = ring.covering(from, to);
            let mut buf = vec![0u8; (to - from) as usize];
            copy_pieces(&pieces, from, &mut buf);
            assert_eq!(&buf[..], &data[from as usize..to as usize], "{from}..{to}");
        }
        assert_eq!(ring.chunk_at(210).map(|b| b.len()), Some(70));
        assert!(ring.chunk_at(211).is_none());
    }
}
