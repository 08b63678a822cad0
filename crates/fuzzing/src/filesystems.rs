//! Filesystem targets: each reader opens the sparse disk as a whole-disk
//! filesystem and the tree is walked the way OS detection walks it (list,
//! stat, read the start of files, read links), within fixed bounds.

use crate::input::SparseDisk;
use guestinspect::fs::{self, FileType, Filesystem, InodeId, Opener};
use std::sync::Arc;

/// Directory entries visited in all.
const MAX_VISITS: usize = 256;
/// Entries listed per directory.
const MAX_DIR_ENTRIES: usize = 512;
const READ_LEN: usize = 4096;

pub fn ext(data: &[u8]) {
    open_and_walk(fs::ext::open, data);
}

pub fn xfs(data: &[u8]) {
    open_and_walk(fs::xfs::open, data);
}

pub fn btrfs(data: &[u8]) {
    open_and_walk(fs::btrfs::open, data);
}

pub fn ntfs(data: &[u8]) {
    open_and_walk(fs::ntfs::open, data);
}

pub fn fat(data: &[u8]) {
    open_and_walk(fs::fat::open, data);
}

fn open_and_walk(open: Opener, data: &[u8]) {
    let disk = Arc::new(SparseDisk::decode(data));
    let len = diskformat::ReadAt::len(&*disk);
    if let Ok(Some(fs)) = open(disk, 0, len) {
        let _ = (fs.kind(), fs.label(), fs.uuid());
        walk(&*fs);
    }
}

/// Breadth first from the root, at most `MAX_VISITS` entries.
fn walk(fs: &dyn Filesystem) {
    let mut queue: Vec<InodeId> = vec![fs.root()];
    let mut visits = 0;
    let mut buf = vec![0u8; READ_LEN];
    while let Some(dir) = queue.pop() {
        let Ok(entries) = fs.read_dir(dir, MAX_DIR_ENTRIES) else {
            continue;
        };
        for entry in entries {
            visits += 1;
            if visits > MAX_VISITS {
                return;
            }
            let Ok(stat) = fs.stat(entry.inode) else {
                continue;
            };
            match stat.file_type {
                FileType::Dir => queue.push(entry.inode),
                FileType::Symlink => drop(fs.read_link(entry.inode)),
                FileType::File => drop(fs.read(entry.inode, 0, &mut buf)),
                FileType::Other => {}
            }
        }
    }
}
