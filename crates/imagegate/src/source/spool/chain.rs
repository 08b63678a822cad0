//! Proof that bytes read again from the source are the bytes hashed the
//! first time, without hashing anything twice on the way in.
//!
//! The SHA-256 of the source is one chain of compression steps. The hasher
//! keeps a copy of its state at every granule boundary (every 1 MiB for
//! sources up to 64 GiB; larger sources have larger granules, so that at most
//! [`MAX_GRANULES`] states are kept). Bytes of granule `g` fetched again are
//! run from state `g`: they are the original bytes exactly when that gives
//! state `g + 1` (compared through `finalize`, which is a function of the
//! state and the common length), or, for the last granule, the digest of
//! the whole source. Passing with other bytes would be a SHA-256 collision.

use super::sync::Mutex;

use sha2::{Digest, Sha256};

/// Smallest re-read unit.
const MIN_GRANULE: u64 = 1 << 20;
/// Most states kept for one source (each ~0.1 KiB).
const MAX_GRANULES: u64 = 1 << 16;

/// The granule size for a source of `len` bytes: a power of two.
pub(super) fn granule_for(len: u64) -> u64 {
    MIN_GRANULE.max(len.div_ceil(MAX_GRANULES).next_power_of_two())
}

pub(super) struct HashChain {
    granule: u64,
    len: u64,
    /// `states[g]`: the hasher after bytes `[0, g × granule)`.
    states: Mutex<Vec<Sha256>>,
    digest: Mutex<Option<[u8; 32]>>,
}

impl HashChain {
    pub(super) fn new(len: u64) -> HashChain {
        HashChain {
            granule: granule_for(len),
            len,
            states: Mutex::new(Vec::new()),
            digest: Mutex::new(None),
        }
    }

    pub(super) fn granule(&self) -> u64 {
        self.granule
    }

    /// The byte range of granule `g`.
    pub(super) fn range(&self, g: u64) -> (u64, u64) {
        let start = g * self.granule;
        (start, (start + self.granule).min(self.len))
    }

    /// Feeds `data` (the stream continuing at `pos`) to `h`, recording the
    /// state at every granule boundary it reaches (including `pos` itself
    /// when it is the very start).
    pub(super) fn update(&self, h: &mut Sha256, pos: u64, mut data: &[u8]) {
        let mut pos = pos;
        if pos == 0 {
            self.record(0, h);
        }
        while !data.is_empty() {
            let to_boundary = self.granule - pos % self.granule;
            let n = (to_boundary as usize).min(data.len());
            h.update(&data[..n]);
            pos += n as u64;
            data = &data[n..];
            if pos.is_multiple_of(self.granule) {
                self.record(pos / self.granule, h);
            }
        }
    }

    fn record(&self, g: u64, h: &Sha256) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        // A state is recorded once, in order; a gap means this hasher did
        // not start at 0 (never the case) and the chain stays unusable.
        if states.len() as u64 == g {
            states.push(h.clone());
        }
    }

    /// The digest of the whole source, once hashed.
    pub(super) fn finish(&self, digest: [u8; 32]) {
        *self.digest.lock().unwrap_or_else(|p| p.into_inner()) = Some(digest);
    }

    /// Whether granule `g` can be checked yet (the hasher has passed it).
    pub(super) fn can_verify(&self, g: u64) -> bool {
        let (_, end) = self.range(g);
        let have = self.states.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
        if end == self.len {
            have > g
                && self
                    .digest
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some()
        } else {
            have > g + 1
        }
    }

    /// True when `data` is exactly the bytes of granule `g` that were hashed.
    pub(super) fn verify(&self, g: u64, data: &[u8]) -> bool {
        let (start, end) = self.range(g);
        if data.len() as u64 != end - start {
            return false;
        }
        let (mut from, next) = {
            let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            match states.get(g as usize) {
                Some(s) => (s.clone(), states.get(g as usize + 1).cloned()),
                None => return false,
            }
        };
        from.update(data);
        let got: [u8; 32] = from.finalize().into();
        let want = if end == self.len {
            *self.digest.lock().unwrap_or_else(|p| p.into_inner())
        } else {
            next.map(|n| n.finalize().into())
        };
        want == Some(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granules_stay_few() {
        assert_eq!(granule_for(0), 1 << 20);
        assert_eq!(granule_for(64 << 30), 1 << 20);
        assert_eq!(granule_for((64 << 30) + 1), 2 << 20);
        assert!((512u64 << 30).div_ceil(granule_for(512 << 30)) <= MAX_GRANULES);
    }

    #[test]
    fn only_the_hashed_bytes_verify() {
        let len = (2 << 20) + 12345;
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
        let chain = HashChain::new(len as u64);
        let mut h = Sha256::new();
        // Fed in odd pieces that straddle the boundaries.
        let mut pos = 0usize;
        for piece in data.chunks(300_001) {
            chain.update(&mut h, pos as u64, piece);
            pos += piece.len();
        }
        assert!(!chain.can_verify(2), "the last granule needs the digest");
        chain.finish(h.finalize().into());
        for g in 0..3u64 {
            assert!(chain.can_verify(g));
            let (s, e) = chain.range(g);
            let mut bytes = data[s as usize..e as usize].to_vec();
            assert!(chain.verify(g, &bytes), "granule {g}");
            let mid = bytes.len() / 2;
            bytes[mid] ^= 1;
            assert!(!chain.verify(g, &bytes), "granule {g} flipped");
            assert!(!chain.verify(g, &bytes[1..]), "granule {g} short");
        }
        let (s, e) = chain.range(0);
        assert!(
            !chain.verify(1, &data[s as usize..e as usize]),
            "another granule's bytes"
        );
    }
}
