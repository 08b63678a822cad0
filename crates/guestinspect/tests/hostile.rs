//! Hostile disks: loops in partition chains, directories and symlinks,
//! absurd counts, corrupted superblocks, inodes, extents and LVM metadata.
//! Each must end in a clear error or warning, quickly, never a hang or a
//! panic.

mod common;

use common::skip;
use common::*;
use guestinspect::fs::{ext, path, FsError};
use guestinspect::part::{self, TableKind};
use guestinspect::{inspect, InspectOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn mbr_entry(sector: &mut [u8], i: usize, ptype: u8, lba: u32, sectors: u32) {
    let o = 446 + 16 * i;
    sector[o + 4] = ptype;
    sector[o + 8..o + 12].copy_from_slice(&lba.to_le_bytes());
    sector[o + 12..o + 16].copy_from_slice(&sectors.to_le_bytes());
    sector[510] = 0x55;
    sector[511] = 0xaa;
}

/// An MBR disk whose extended partition at sector 2048 holds EBRs at the
/// given sectors (relative to 2048), each linking to `next[i]`.
fn ebr_disk(ebrs: &[(u32, Option<u32>)]) -> Vec<u8> {
    let mut d = vec![0u8; 8 << 20];
    mbr_entry(&mut d[0..512], 0, 0x05, 2048, 8192);
    for (rel, next) in ebrs {
        let at = (2048 + *rel as usize) * 512;
        let s = &mut d[at..at + 512];
        mbr_entry(s, 0, 0x83, 1, 1);
        if let Some(n) = next {
            mbr_entry(s, 1, 0x05, *n, 2);
        }
    }
    d
}

#[test]
fn a_looping_logical_chain_stops_with_a_warning() {
    // A → B → C → B
    let d = ebr_disk(&[(0, Some(100)), (100, Some(200)), (200, Some(100))]);
    let t = part::detect(&MemDisk(d)).unwrap();
    let logical: Vec<u32> = t
        .partitions
        .iter()
        .filter(|p| p.logical)
        .map(|p| p.index)
        .collect();
    assert_eq!(logical, vec![5, 6, 7]);
    assert!(
        t.warnings.iter().any(|w| w.contains("loops")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn an_endless_logical_chain_is_capped() {
    let n = 2000u32;
    let ebrs: Vec<(u32, Option<u32>)> = (0..n).map(|i| (i * 4, Some((i + 1) * 4))).collect();
    let d = ebr_disk(&ebrs);
    let start = Instant::now();
    let t = part::detect(&MemDisk(d)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(t.partitions.len(), part::MAX_PARTITIONS);
    assert!(
        t.warnings.iter().any(|w| w.contains("more than")),
        "{:?}",
        t.warnings
    );
}

#[test]
fn a_gpt_claiming_a_huge_entry_array_is_refused_without_allocating_it() {
    let mut d = vec![0u8; 4 << 20];
    mbr_entry(&mut d[0..512], 0, 0xee, 1, 8191);
    let h = &mut d[512..1024];
    h[0..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x10000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[72..80].copy_from_slice(&2u64.to_le_bytes());
    h[80..84].copy_from_slice(&0x1000_0000u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    let crc = crc32fast::hash(&h[..92]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let err = part::detect(&MemDisk(d.clone())).unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    // Inspection goes on: no table, a warning, no root.
    let r = inspect(Arc::new(MemDisk(d)), &InspectOptions::default()).unwrap();
    assert_eq!(r.partition_table.kind, TableKind::None);
    assert!(r.root.is_none());
    assert!(
        r.warnings.iter().any(|w| w.contains("protective MBR")),
        "{:?}",
        r.warnings
    );
}

/// A bare ext4 of a small Debian-like tree; returns (dir, image path).
fn ext_image(
    extra: impl FnOnce(&std::path::Path),
) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !require("hostile ext4", &["mkfs.ext4", "debugfs"]) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = small_tree(dir.path());
    extra(&root);
    let img = dir.path().join("ext4.img");
    sparse_file(&img, 16 * MIB);
    mkfs_ext4(&img, 0, 16 * MIB, &root, &Ext4::default());
    Some((dir, img))
}

#[test]
fn symlink_loops_end_in_a_limit() {
    let Some((_d, img)) = ext_image(|root| {
        std::os::unix::fs::symlink("b", root.join("etc/a")).unwrap();
        std::os::unix::fs::symlink("a", root.join("etc/b")).unwrap();
        std::os::unix::fs::symlink("../etc/./self/x", root.join("etc/self")).unwrap();
    }) else {
        return;
    };
    let fs = ext::open(open_disk(&img), 0, 16 * MIB).unwrap().unwrap();
    assert!(matches!(
        path::resolve(&*fs, "/etc/a", true),
        Err(FsError::Limit(_))
    ));
    assert!(matches!(
        path::resolve(&*fs, "/etc/self", true),
        Err(FsError::Limit(_))
    ));
    assert_eq!(
        path::read_small_file(&*fs, "/etc/hostname", 100).unwrap(),
        b"localhost\n"
    );
}

#[test]
fn a_directory_hard_linked_into_itself_is_walked_boundedly() {
    let Some((_d, img)) = ext_image(|_| {}) else {
        return;
    };
    // /usr/loop is the root directory again: a cycle in the tree.
    debugfs(&img, "ln <2> /usr/loop", true);
    let fs = ext::open(open_disk(&img), 0, 16 * MIB).unwrap().unwrap();
    let short = "/usr/loop".repeat(10) + "/etc/hostname";
    assert_eq!(
        path::read_small_file(&*fs, &short, 100).unwrap(),
        b"localhost\n"
    );
    let long = "/usr/loop".repeat(5000) + "/etc/hostname";
    let start = Instant::now();
    assert!(matches!(
        path::resolve(&*fs, &long, true),
        Err(FsError::Limit(_))
    ));
    assert!(start.elapsed() < Duration::from_secs(2));
    // Inspection is unaffected: it never walks the tree blindly.
    let r = inspect(open_disk(&img), &InspectOptions::default()).unwrap();
    assert_eq!(r.os.unwrap().os_type, "Debian");
}

#[test]
fn corrupted_superblocks_are_clear_errors() {
    let Some((_d, img)) = ext_image(|_| {}) else {
        return;
    };
    let pristine = std::fs::read(&img).unwrap();
    // (offset in the superblock, bytes, what the error mentions)
    let cases: &[(usize, &[u8], &str)] = &[
        (0x18, &20u32.to_le_bytes(), "block size"),
        (0x28, &0u32.to_le_bytes(), "inodes per group"),
        (0x20, &0u32.to_le_bytes(), "blocks per group"),
        (0x58, &7u16.to_le_bytes(), "inode size"),
        (0x04, &0u32.to_le_bytes(), "first data block"),
        (0x00, &u32::MAX.to_le_bytes(), "do not fit"),
        // blocks_count_hi (64bit feature): 2^63+ blocks of 1 KiB.
        (0x150, &u32::MAX.to_le_bytes(), "overflow"),
    ];
    for (off, bytes, what) in cases {
        let mut d = pristine.clone();
        d[1024 + off..1024 + off + bytes.len()].copy_from_slice(bytes);
        let disk = Arc::new(MemDisk(d));
        match ext::open(disk.clone(), 0, 16 * MIB) {
            Err(FsError::Corrupt(m)) => assert!(m.contains(what), "{m} should mention {what}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a superblock with {what} corrupted was accepted"),
        }
        let r = inspect(disk, &InspectOptions::default()).unwrap();
        assert!(r.root.is_none());
        assert!(
            r.warnings.iter().any(|w| w.contains("corrupt")),
            "{:?}",
            r.warnings
        );
    }
}

#[test]
fn corrupted_inodes_and_huge_extents_are_clear_errors() {
    let Some((_d, img)) = ext_image(|_| {}) else {
        return;
    };
    // The root directory's extent header claims 65535 entries and depth
    // 32767.
    let root_inode = inode_offset(&img, "<2>");
    let pristine = std::fs::read(&img).unwrap();
    let mut d = pristine.clone();
    let eh = (root_inode + 0x28) as usize;
    d[eh + 2..eh + 4].copy_from_slice(&0xffffu16.to_le_bytes());
    d[eh + 6..eh + 8].copy_from_slice(&0x7fffu16.to_le_bytes());
    let fs = ext::open(Arc::new(MemDisk(d.clone())), 0, 16 * MIB)
        .unwrap()
        .unwrap();
    assert!(matches!(
        fs.read_dir(fs.root(), 1000),
        Err(FsError::Corrupt(_))
    ));
    let r = inspect(Arc::new(MemDisk(d)), &InspectOptions::default()).unwrap();
    assert!(r.root.is_none());

    // /etc/hostname's extent: 32767 blocks starting at block 2^48 - 1.
    let host = inode_offset(&img, "/etc/hostname");
    let mut d = pristine.clone();
    let e = (host + 0x28 + 12) as usize;
    d[e + 4..e + 6].copy_from_slice(&32767u16.to_le_bytes());
    d[e + 6..e + 8].copy_from_slice(&0xffffu16.to_le_bytes());
    d[e + 8..e + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let fs = ext::open(Arc::new(MemDisk(d)), 0, 16 * MIB)
        .unwrap()
        .unwrap();
    match path::read_small_file(&*fs, "/etc/hostname", 100) {
        Err(FsError::Corrupt(m)) => assert!(m.contains("beyond the filesystem"), "{m}"),
        other => panic!("expected a corruption error, got {other:?}"),
    }

    // An inode number beyond the inode count in a directory entry.
    let mut d = pristine;
    let hostname_no = debugfs(&img, "stat /etc/hostname", false);
    let ino: u32 = hostname_no
        .split("Inode: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    let bs = fs_block_size(&img);
    let needle = ino.to_le_bytes();
    let mut patched = false;
    for blk in debugfs(&img, "blocks /etc", false).split_whitespace() {
        let blk: usize = blk.parse().unwrap();
        let block = &mut d[blk * bs..(blk + 1) * bs];
        // The entry is the inode number followed by a record length and
        // the name "hostname".
        if let Some(pos) = block
            .windows(16)
            .position(|w| w[0..4] == needle && &w[8..16] == b"hostname")
        {
            block[pos..pos + 4].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
            patched = true;
        }
    }
    assert!(patched, "entry of /etc/hostname not found");
    let fs = ext::open(Arc::new(MemDisk(d)), 0, 16 * MIB)
        .unwrap()
        .unwrap();
    assert!(matches!(
        path::read_small_file(&*fs, "/etc/hostname", 100),
        Err(FsError::Corrupt(_))
    ));
}

#[test]
fn lvm_metadata_with_absurd_numbers_is_reported_not_obeyed() {
    if !require(
        "lvm_metadata_with_absurd_numbers",
        &["losetup", "pvcreate", "mkfs.ext4"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pv = dir.path().join("pv.img");
    sparse_file(&pv, 32 * MIB);
    if let Err(why) = make_linear_lv(dir.path(), &pv, "vgx", "root", 4, &[]) {
        skip::skip(&format!("lvm_metadata_with_absurd_numbers: {why}"));
        return;
    }
    let pristine = std::fs::read(&pv).unwrap();
    let r = inspect(
        Arc::new(MemDisk(pristine.clone())),
        &InspectOptions::default(),
    )
    .unwrap();
    assert!(r.lvm[0].readable, "{:?}", r.lvm);

    for (from, to) in [
        ("extent_count = 4", "extent_count = 99999999999999"),
        ("extent_size = 8192", "extent_size = 0"),
        ("segment_count = 1", "segment_count = 2147483647"),
        ("\"pv0\", 0", "\"pv0\", 4611686018427387904"),
        ("stripe_count = 1", "stripe_count = 2"),
    ] {
        let d = rewrite_lvm_metadata(&pristine, |t| t.replacen(from, to, 1));
        let start = Instant::now();
        let r = inspect(Arc::new(MemDisk(d)), &InspectOptions::default()).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2));
        let ok = r.lvm.iter().any(|lv| lv.readable);
        assert!(!ok, "{to}: {:?}", r.lvm);
        assert!(r.root.is_none());
    }
}

/// Rewrite the PV's current metadata text and fix its checksums, as a
/// hostile tool would.
fn rewrite_lvm_metadata(pv: &[u8], f: impl FnOnce(String) -> String) -> Vec<u8> {
    use guestinspect::lvm::lvm_crc;
    let le64 = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let mut d = pv.to_vec();
    let label = (0..4)
        .map(|s| s * 512)
        .find(|&o| &d[o..o + 8] == b"LABELONE")
        .unwrap();
    let hdr = label + u32::from_le_bytes(d[label + 20..label + 24].try_into().unwrap()) as usize;
    // Skip the data area list to the first metadata area.
    let mut pos = hdr + 40;
    while le64(&d, pos) != 0 {
        pos += 16;
    }
    pos += 16;
    let mda = le64(&d, pos) as usize;
    let rl_off = le64(&d, mda + 40) as usize;
    let rl_size = le64(&d, mda + 48) as usize;
    let text = String::from_utf8_lossy(&d[mda + rl_off..mda + rl_off + rl_size]).into_owned();
    let text = text.trim_end_matches('\0').to_string();
    let mut new = f(text).into_bytes();
    new.push(0);
    d[mda + rl_off..mda + rl_off + new.len()].copy_from_slice(&new);
    d[mda + 48..mda + 56].copy_from_slice(&(new.len() as u64).to_le_bytes());
    let crc = lvm_crc(&new);
    d[mda + 56..mda + 60].copy_from_slice(&crc.to_le_bytes());
    let hcrc = lvm_crc(&d[mda + 4..mda + 512]);
    d[mda..mda + 4].copy_from_slice(&hcrc.to_le_bytes());
    d
}
