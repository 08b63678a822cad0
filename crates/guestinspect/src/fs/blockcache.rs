//! A small bounded cache of metadata blocks shared by the readers: inode
//! tables, directory and FAT sectors are read many times during path
//! resolution, and every re-read would count against the inspection's
//! read budget. When full it is simply emptied: inspection touches few
//! blocks, so a smarter policy would not pay for itself.

use diskformat::ReadAt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(crate) struct BlockCache {
    map: Mutex<HashMap<u64, Arc<[u8]>>>,
    max_entries: usize,
}

impl BlockCache {
    pub(crate) fn new(max_entries: usize) -> BlockCache {
        BlockCache {
            map: Mutex::new(HashMap::new()),
            max_entries,
        }
    }

    /// `len` bytes at `offset` of `disk`, from the cache when present.
    /// Entries are keyed by offset alone: one cache serves one reader with
    /// one block size.
    pub(crate) fn get(
        &self,
        disk: &dyn ReadAt,
        offset: u64,
        len: usize,
    ) -> std::io::Result<Arc<[u8]>> {
        if let Ok(map) = self.map.lock() {
            if let Some(b) = map.get(&offset) {
                if b.len() == len {
                    return Ok(b.clone());
                }
            }
        }
        let mut buf = vec![0u8; len];
        disk.read_at(offset, &mut buf)?;
        let block: Arc<[u8]> = buf.into();
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.max_entries {
                map.clear();
            }
            map.insert(offset, block.clone());
        }
        Ok(block)
    }
}
