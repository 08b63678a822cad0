//! How fuzz bytes become a disk.
//!
//! Container targets read the input as the image file itself
//! ([`OwnedBytes`]). Filesystem, partition and whole-guest targets read it as
//! a [`SparseDisk`]: a size and a list of (offset, bytes) chunks, zeros
//! elsewhere. Real filesystems are mostly zeros (an empty XFS is 300 MiB),
//! so a sparse seed of a few KiB holds every metadata block of one, and the
//! fuzzer's mutations land on metadata instead of on zeros.
//!
//! Sparse encoding (little-endian), chosen so that any byte string decodes:
//! `u32 size_in_sectors`, then records `u32 sector, u16 len, [len] bytes`
//! until the input ends; a truncated last record keeps what is there. A
//! later record overwrites an earlier one where they overlap.

use diskformat::ReadAt;
use std::collections::BTreeMap;
use std::io;

const SECTOR: u64 = 512;

/// The input bytes as an image file.
pub struct OwnedBytes(pub Vec<u8>);

impl ReadAt for OwnedBytes {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| past_end())?;
        let end = start.checked_add(buf.len()).ok_or_else(past_end)?;
        let src = self.0.get(start..end).ok_or_else(past_end)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
}

/// A disk of `size` bytes that holds `chunks` and zeros elsewhere.
pub struct SparseDisk {
    size: u64,
    /// Start offset → bytes; no two chunks overlap (see `insert`).
    chunks: BTreeMap<u64, Vec<u8>>,
}

impl SparseDisk {
    /// Decode the sparse encoding described at the top of this file.
    pub fn decode(data: &[u8]) -> SparseDisk {
        let size = match data.get(..4) {
            Some(b) => u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) * SECTOR,
            None => 0,
        };
        let mut disk = SparseDisk {
            size,
            chunks: BTreeMap::new(),
        };
        let mut rest = data.get(4..).unwrap_or(&[]);
        while rest.len() >= 6 {
            let sector = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let len = usize::from(u16::from_le_bytes([rest[4], rest[5]]));
            let body = &rest[6..];
            let take = len.min(body.len());
            disk.insert(u64::from(sector) * SECTOR, &body[..take]);
            rest = &body[take..];
        }
        disk
    }

    /// Encode `image` (a whole raw disk) keeping only its non-zero sectors;
    /// the inverse of [`SparseDisk::decode`], used to make seeds.
    pub fn encode(image: &[u8]) -> Vec<u8> {
        let sectors = image.len().div_ceil(SECTOR as usize);
        let mut out = (sectors as u32).to_le_bytes().to_vec();
        let mut i = 0;
        while i < sectors {
            let at = |s: usize| &image[s * 512..((s + 1) * 512).min(image.len())];
            if at(i).iter().all(|&b| b == 0) {
                i += 1;
                continue;
            }
            // A run of non-zero sectors, at most what a u16 length holds.
            let start = i;
            while i < sectors && i - start < 127 && !at(i).iter().all(|&b| b == 0) {
                i += 1;
            }
            let bytes = &image[start * 512..(i * 512).min(image.len())];
            out.extend_from_slice(&(start as u32).to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    fn insert(&mut self, offset: u64, bytes: &[u8]) {
        if bytes.is_empty() || offset >= self.size {
            return;
        }
        let end = offset + bytes.len() as u64;
        // Cut what the new chunk covers out of the old ones, so chunks never overlap.
        let overlapping: Vec<u64> = self
            .chunks
            .range(..end)
            .filter(|(start, b)| **start + b.len() as u64 > offset)
            .map(|(start, _)| *start)
            .collect();
        for start in overlapping {
            if let Some(old) = self.chunks.remove(&start) {
                let old_end = start + old.len() as u64;
                if start < offset {
                    self.chunks
                        .insert(start, old[..(offset - start) as usize].to_vec());
                }
                if old_end > end {
                    self.chunks
                        .insert(end, old[(end - start) as usize..].to_vec());
                }
            }
        }
        self.chunks.insert(offset, bytes.to_vec());
    }

    /// Copy the chunks that overlap `[offset, offset + buf.len())` into `buf`
    /// (which the caller zeroed).
    fn fill(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (&start, bytes) in self.chunks.range(..end) {
            let chunk_end = start + bytes.len() as u64;
            if chunk_end <= offset {
                continue;
            }
            let from = start.max(offset);
            let to = chunk_end.min(end);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
    }
}

impl ReadAt for SparseDisk {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(past_end)?;
        if end > self.size {
            return Err(past_end());
        }
        buf.fill(0);
        self.fill(offset, buf);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.size
    }
}

fn past_end() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "read past the end of the fuzz input",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_gives_the_image_back() {
        let mut image = vec![0u8; 300 * 512 + 100];
        image[5] = 1;
        image[512 * 7..512 * 200].fill(0xAB);
        image[300 * 512 + 99] = 9;
        let disk = SparseDisk::decode(&SparseDisk::encode(&image));
        assert_eq!(disk.len(), 301 * 512);
        let mut back = vec![0u8; image.len()];
        disk.read_at(0, &mut back).unwrap();
        assert_eq!(back, image);
    }

    #[test]
    fn overlapping_records_keep_the_later_bytes() {
        let mut data = 4u32.to_le_bytes().to_vec();
        for (sector, byte, len) in [(0u32, 1u8, 1024u16), (1, 2, 100)] {
            data.extend_from_slice(&sector.to_le_bytes());
            data.extend_from_slice(&len.to_le_bytes());
            data.extend(std::iter::repeat_n(byte, usize::from(len)));
        }
        let disk = SparseDisk::decode(&data);
        let mut buf = vec![0u8; 2048];
        disk.read_at(0, &mut buf).unwrap();
        assert!(buf[..512].iter().all(|&b| b == 1));
        assert!(buf[512..612].iter().all(|&b| b == 2));
        assert!(buf[612..1024].iter().all(|&b| b == 1));
        assert!(buf[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn any_bytes_decode() {
        for data in [
            &b""[..],
            b"\x01",
            b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\x01",
        ] {
            let disk = SparseDisk::decode(data);
            let mut buf = [0u8; 16];
            let _ = disk.read_at(disk.len().saturating_sub(16), &mut buf);
        }
    }
}
