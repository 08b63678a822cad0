//! The ext and FAT readers against what mkfs wrote: ext2 with indirect
//! blocks, ext3, ext4 with htree directories (made by `e2fsck -D`) and
//! inline data, FAT32 with long names, and a GPT on 4096-byte sectors.
//! Contents are compared byte for byte with the source files.

mod common;

use common::*;
use guestinspect::fs::{ext, fat, path, FileType, Filesystem};
use guestinspect::part::{self, TableKind};
use std::path::Path;

/// A file of `n` bytes whose content depends on its position.
fn patterned(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn read_all(fs: &dyn Filesystem, p: &str) -> Vec<u8> {
    let ino = path::resolve(fs, p, true).unwrap();
    let size = fs.stat(ino).unwrap().size as usize;
    path::read_prefix(fs, ino, size).unwrap()
}

fn tree_with_big_files(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("tree");
    std::fs::create_dir_all(root.join("data")).unwrap();
    // 12 direct + 256 single-indirect blocks of 1 KiB; 600 KiB reaches the
    // double-indirect range on a 1 KiB-block ext2.
    std::fs::write(root.join("data/big.bin"), patterned(600 * 1024 + 123, 7)).unwrap();
    std::fs::write(root.join("data/small.txt"), b"tiny\n").unwrap();
    let long_target = "x".repeat(100);
    std::fs::write(root.join("data").join(&long_target), b"slow link target\n").unwrap();
    std::os::unix::fs::symlink(&long_target, root.join("data/slow-link")).unwrap();
    std::os::unix::fs::symlink("small.txt", root.join("data/fast-link")).unwrap();
    root
}

#[test]
fn ext2_and_ext3_with_indirect_blocks() {
    if !require("ext2_and_ext3_with_indirect_blocks", &["mkfs.ext4"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tree_with_big_files(dir.path());
    for kind in ["ext2", "ext3"] {
        let img = dir.path().join(format!("{kind}.img"));
        sparse_file(&img, 8 * MIB);
        mkfs_ext4(
            &img,
            0,
            8 * MIB,
            &root,
            &Ext4 {
                fs_type: Some(kind),
                ..Ext4::default()
            },
        );
        let fs = ext::open(open_disk(&img), 0, 8 * MIB).unwrap().unwrap();
        assert_eq!(fs.kind(), kind);
        assert_eq!(
            read_all(&*fs, "/data/big.bin"),
            std::fs::read(root.join("data/big.bin")).unwrap()
        );
        assert_eq!(read_all(&*fs, "/data/fast-link"), b"tiny\n");
        assert_eq!(read_all(&*fs, "/data/slow-link"), b"slow link target\n");
        let link = path::resolve(&*fs, "/data/slow-link", false).unwrap();
        assert_eq!(fs.stat(link).unwrap().file_type, FileType::Symlink);
        assert_eq!(fs.read_link(link).unwrap(), "x".repeat(100).as_bytes());
        // Reading at an offset inside the double-indirect range.
        let ino = path::resolve(&*fs, "/data/big.bin", true).unwrap();
        let mut buf = vec![0u8; 5000];
        let n = fs.read(ino, 300_000, &mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &std::fs::read(root.join("data/big.bin")).unwrap()[300_000..305_000]
        );
    }
}

#[test]
fn ext4_htree_directories_and_inline_data() {
    if !require(
        "ext4_htree_directories_and_inline_data",
        &["mkfs.ext4", "e2fsck"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tree_with_big_files(dir.path());
    let many = root.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..3000 {
        std::fs::write(
            many.join(format!("entry-with-a-longish-name-{i:05}")),
            format!("{i}\n"),
        )
        .unwrap();
    }
    // Past i_block's 60 bytes, inline data continues in the inode's
    // "system.data" attribute (a 100-byte file); a 2-entry directory fits
    // i_block (mke2fs -d gives larger directories blocks).
    std::fs::write(root.join("data/medium.txt"), patterned(100, 9)).unwrap();
    let sd = root.join("data/small-dir");
    std::fs::create_dir_all(&sd).unwrap();
    for n in ["a1", "b2"] {
        std::fs::write(sd.join(n), n).unwrap();
    }
    let img = dir.path().join("ext4.img");
    sparse_file(&img, 32 * MIB);
    mkfs_ext4(
        &img,
        0,
        32 * MIB,
        &root,
        &Ext4 {
            features: Some("inline_data".into()),
            ..Ext4::default()
        },
    );
    // -D rebuilds directories as hashed (htree) indexes.
    let out = std::process::Command::new("e2fsck")
        .args(["-fyD", img.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.code().unwrap_or(8) < 4,
        "e2fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let htree = debugfs(&img, "htree_dump /many", false);
    assert!(
        htree.contains("Root node dump"),
        "not an htree: {}",
        &htree[..htree.len().min(300)]
    );

    let fs = ext::open(open_disk(&img), 0, 32 * MIB).unwrap().unwrap();
    let many_ino = path::resolve(&*fs, "/many", true).unwrap();
    let entries = fs.read_dir(many_ino, 10_000).unwrap();
    assert_eq!(entries.len(), 3000);
    assert!(
        fs.read_dir(many_ino, 100).is_err(),
        "the limit must be enforced"
    );
    assert_eq!(
        read_all(&*fs, "/many/entry-with-a-longish-name-02999"),
        b"2999\n"
    );
    // Small files and directories live inline in the inode.
    for p in ["/data/small.txt", "/data/medium.txt", "/data/small-dir"] {
        let st = debugfs(&img, &format!("stat {p}"), false);
        assert!(
            st.contains("Size of inline data"),
            "{p} is not inline: {st}"
        );
    }
    assert_eq!(read_all(&*fs, "/data/small.txt"), b"tiny\n");
    assert_eq!(read_all(&*fs, "/data/medium.txt"), patterned(100, 9));
    let sd = path::resolve(&*fs, "/data/small-dir", true).unwrap();
    let mut names: Vec<Vec<u8>> = fs
        .read_dir(sd, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, [b"a1", b"b2"]);
    assert_eq!(read_all(&*fs, "/data/small-dir/b2"), b"b2");
    assert_eq!(
        read_all(&*fs, "/data/big.bin"),
        std::fs::read(root.join("data/big.bin")).unwrap()
    );
}

#[test]
fn fat32_with_long_names() {
    if !require("fat32_with_long_names", &["mkfs.vfat", "mcopy", "mmd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fat32.img");
    run(
        "mkfs.vfat",
        &[
            "-C",
            "-F",
            "32",
            "-n",
            "EFI",
            img.to_str().unwrap(),
            &(64 * 1024).to_string(),
        ],
    );
    let i = img.to_str().unwrap();
    run(
        "mmd",
        &[
            "-i",
            i,
            "::/EFI",
            "::/EFI/Microsoft",
            "::/EFI/Microsoft/Boot",
        ],
    );
    let big = patterned(70_000, 3);
    let src = dir.path().join("bootmgfw.efi");
    std::fs::write(&src, &big).unwrap();
    run(
        "mcopy",
        &[
            "-i",
            i,
            src.to_str().unwrap(),
            "::/EFI/Microsoft/Boot/bootmgfw.efi",
        ],
    );
    for n in 0..50 {
        let p = dir.path().join("f");
        std::fs::write(&p, format!("{n}")).unwrap();
        run(
            "mcopy",
            &[
                "-i",
                i,
                p.to_str().unwrap(),
                &format!("::/EFI/Microsoft/Boot/Ünïcode name number {n}.txt"),
            ],
        );
    }
    let len = std::fs::metadata(&img).unwrap().len();
    let fs = fat::open(open_disk(&img), 0, len).unwrap().unwrap();
    assert_eq!(fs.label().as_deref(), Some("EFI"));
    assert_eq!(read_all(&*fs, "/efi/microsoft/boot/BOOTMGFW.EFI"), big);
    assert_eq!(
        read_all(&*fs, "/EFI/Microsoft/Boot/Ünïcode name number 42.txt"),
        b"42"
    );
    let boot = path::resolve(&*fs, "/EFI/Microsoft/Boot", true).unwrap();
    assert_eq!(fs.read_dir(boot, 1000).unwrap().len(), 51);
}

#[test]
fn gpt_on_4096_byte_sectors() {
    if !require("gpt_on_4096_byte_sectors", &["fdisk"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("4k.raw");
    sparse_file(&disk, 64 * MIB);
    // sfdisk here has no --sector-size; fdisk -b does (g: new GPT, n: a
    // partition from sector 256 to 8447, w: write).
    run_stdin(
        "fdisk",
        &["-b", "4096", disk.to_str().unwrap()],
        Some("g\nn\n1\n256\n8447\nw\n"),
    );
    let t = part::detect(&*open_disk(&disk)).unwrap();
    assert_eq!((t.kind, t.sector_size), (TableKind::Gpt, 4096));
    assert_eq!(
        (t.partitions[0].start, t.partitions[0].size),
        (MIB, 32 * MIB)
    );
    assert_eq!(t.partitions[0].type_name, Some("linux"));
}
