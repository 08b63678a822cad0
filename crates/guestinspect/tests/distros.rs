//! Whole-disk inspections of disks built from scratch with Debian's tools:
//! the distributions Tencent imports, with the layouts that matter (root on
//! LVM, separate /boot, GPT with an EFI partition, MBR logical partitions,
//! no partition table, a damaged primary GPT) and the variations the import
//! checks (no cloud-init, no virtio, arm64).

mod common;

use common::skip;
use common::*;
use guestinspect::fs::path;
use guestinspect::os::DriverPresence;
use guestinspect::part::{GptHeader, TableKind};
use guestinspect::{inspect, InspectOptions, Location};

fn opts() -> InspectOptions {
    InspectOptions::default()
}

#[test]
fn centos7_root_on_lvm_with_separate_boot() {
    if !require(
        "centos7_root_on_lvm_with_separate_boot",
        &["sfdisk", "mkfs.ext4", "losetup", "pvcreate"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let boot_uuid = "3b1e5f32-5f1c-4a7e-9d7e-0c6a3a0f1b2c";
    let o = TreeOpts {
        separate_boot: true,
        fstab: format!(
            "#\n# /etc/fstab\n# Created by anaconda\n#\n/dev/mapper/centos-root /                       ext4    defaults        0 0\nUUID={boot_uuid} /boot                   ext4    defaults        0 0\n"
        ),
        ..TreeOpts::default()
    };
    let (root, boot) = linux_tree(w, Distro::CentOS7, &o);
    let disk = w.join("disk.raw");
    sparse_file(&disk, 64 * MIB);
    // p1 /boot 12 MiB, p2 LVM PV 48 MiB.
    sfdisk(
        &disk,
        "label: dos\nstart=2048, size=24576, type=83, bootable\nstart=26624, size=98304, type=8e\n",
    );
    mkfs_ext4(
        &disk,
        2048 * 512,
        12 * MIB,
        &boot.unwrap(),
        &Ext4 {
            uuid: Some(boot_uuid.into()),
            ..Ext4::default()
        },
    );

    // The PV, with a two-segment linear LV (extents 5..8 then 0..3) so that
    // segment order matters.
    let pv = w.join("pv.img");
    sparse_file(&pv, 48 * MIB);
    let pieces = match make_linear_lv(w, &pv, "centos", "root", 6, &[(5, 3), (0, 3)]) {
        Ok(p) => p,
        Err(why) => {
            skip::skip(&format!("centos7_root_on_lvm_with_separate_boot: {why}"));
            return;
        }
    };
    let lv_img = w.join("lv.img");
    sparse_file(&lv_img, 24 * MIB);
    mkfs_ext4(&lv_img, 0, 24 * MIB, &root, &Ext4::default());
    let mut lv_off = 0;
    for (off, len) in &pieces {
        copy_range(&lv_img, lv_off, *len, &pv, *off);
        lv_off += len;
    }
    copy_into(&pv, &disk, 26624 * 512);

    let r = inspect(open_disk(&disk), &opts()).unwrap();
    assert_eq!(r.partition_table.kind, TableKind::Mbr);
    assert!(r.partition_table.partitions[0].bootable);
    assert_eq!(r.lvm.len(), 1, "{:?}", r.lvm);
    let lv = &r.lvm[0];
    assert_eq!(
        (
            lv.vg.as_str(),
            lv.lv.as_str(),
            lv.size,
            lv.segments,
            lv.readable
        ),
        ("centos", "root", 24 * MIB, 2, true)
    );
    assert_eq!(
        r.root,
        Some(Location::Lv {
            vg: "centos".into(),
            lv: "root".into()
        })
    );
    let bootfs = r
        .filesystems
        .iter()
        .find(|f| f.location == Location::Partition { index: 1 })
        .unwrap();
    assert_eq!(bootfs.mountpoint.as_deref(), Some("/boot"));
    assert_eq!(bootfs.uuid.as_deref(), Some(boot_uuid));
    let os = r.os.as_ref().unwrap();
    assert_eq!(os.platform, "Linux");
    assert_eq!(os.os_type, "CentOS");
    assert_eq!(os.major.as_deref(), Some("7"));
    assert_eq!(os.version.as_deref(), Some("7.9"));
    assert_eq!(os.os_name, "CentOS 7.9 64bit");
    assert_eq!(os.architecture.as_deref(), Some("x86_64"));
    // The kernel is on the separate /boot, its modules on the root.
    assert_eq!(os.kernels.len(), 1);
    assert_eq!(
        os.kernels[0].image.as_deref(),
        Some("/boot/vmlinuz-3.10.0-1160.el7.x86_64")
    );
    assert!(os.kernels[0].modules);
    assert!(r.cloud_init);
    assert!(r.virtio.block && r.virtio.net);
    assert_eq!(r.virtio.kernels[0].block, Some(DriverPresence::Module));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

#[test]
fn ubuntu2204_gpt_with_efi_and_builtin_virtio() {
    if !require(
        "ubuntu2204_gpt_with_efi_and_builtin_virtio",
        &["sfdisk", "mkfs.ext4", "mkfs.vfat", "mcopy"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let root_uuid = "0a5ab0e3-9c4c-4e3d-8a53-2c1c8d5f7e61";
    let o = TreeOpts {
        virtio: Virtio::Builtin,
        fstab: format!("# /etc/fstab: static file system information.\nUUID={root_uuid} / ext4 discard,errors=remount-ro 0 1\nUUID=12AB-34CD /boot/efi vfat umask=0077 0 1\n"),
        ..TreeOpts::default()
    };
    let (root, _) = linux_tree(w, Distro::Ubuntu2204, &o);
    let disk = w.join("disk.raw");
    sparse_file(&disk, 64 * MIB);
    sfdisk(
        &disk,
        "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649, name=\"BIOS boot\"\nstart=4096, size=16384, type=U, name=\"EFI System\"\nstart=20480, size=100352, type=L, name=\"root\"\n",
    );
    let grub_cfg = b"search.fs_uuid 0a5ab0e3-9c4c-4e3d-8a53-2c1c8d5f7e61 root\nconfigfile ($root)/boot/grub/grub.cfg\n";
    // mkfs.vfat -i sets the volume id that fstab names.
    let img = w.join("esp.img");
    run(
        "mkfs.vfat",
        &[
            "-C",
            "-i",
            "12AB34CD",
            "-n",
            "ESP",
            img.to_str().unwrap(),
            "8192",
        ],
    );
    let src = w.join("f");
    std::fs::write(&src, grub_cfg).unwrap();
    let i = img.to_str().unwrap();
    for d in ["::/EFI", "::/EFI/ubuntu", "::/EFI/BOOT"] {
        run("mmd", &["-i", i, d]);
    }
    run(
        "mcopy",
        &["-i", i, src.to_str().unwrap(), "::/EFI/ubuntu/grub.cfg"],
    );
    run(
        "mcopy",
        &[
            "-i",
            i,
            src.to_str().unwrap(),
            "::/EFI/BOOT/a-rather-long-file-name.efi",
        ],
    );
    copy_into(&img, &disk, 4096 * 512);
    mkfs_ext4(
        &disk,
        20480 * 512,
        100352 * 512,
        &root,
        &Ext4 {
            uuid: Some(root_uuid.into()),
            label: Some("cloudimg-rootfs".into()),
            ..Ext4::default()
        },
    );

    let r = inspect(open_disk(&disk), &opts()).unwrap();
    assert_eq!(r.partition_table.kind, TableKind::Gpt);
    assert_eq!(r.partition_table.gpt_header, Some(GptHeader::Primary));
    let parts = &r.partition_table.partitions;
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0].type_name, Some("bios-boot"));
    assert_eq!(parts[1].type_name, Some("efi"));
    assert_eq!(parts[2].name.as_deref(), Some("root"));
    assert_eq!(r.root, Some(Location::Partition { index: 3 }));
    let esp = r.filesystems.iter().find(|f| f.kind == "vfat").unwrap();
    assert_eq!(esp.uuid.as_deref(), Some("12AB-34CD"));
    assert_eq!(esp.label.as_deref(), Some("ESP"));
    assert_eq!(esp.mountpoint.as_deref(), Some("/boot/efi"));
    let rootfs = r.filesystems.iter().find(|f| f.kind == "ext4").unwrap();
    assert_eq!(rootfs.label.as_deref(), Some("cloudimg-rootfs"));
    let os = r.os.as_ref().unwrap();
    assert_eq!(
        (
            os.os_type.as_str(),
            os.major.as_deref(),
            os.os_name.as_str()
        ),
        ("Ubuntu", Some("22"), "Ubuntu Server 22.04 LTS 64bit")
    );
    assert_eq!(os.id_like, vec!["debian"]);
    assert!(r.virtio.block && r.virtio.net);
    assert_eq!(r.virtio.kernels[0].net, Some(DriverPresence::Builtin));
    assert!(r.cloud_init);

    // The FAT reader: long names, case-insensitive lookup, file content.
    let disk_r = open_disk(&disk);
    let fat = guestinspect::fs::fat::open(disk_r, 4096 * 512, 16384 * 512)
        .unwrap()
        .unwrap();
    assert_eq!(
        path::read_small_file(&*fat, "/efi/UBUNTU/GRUB.CFG", 4096).unwrap(),
        grub_cfg
    );
    assert_eq!(
        path::read_small_file(&*fat, "/EFI/BOOT/a-rather-long-file-name.efi", 4096).unwrap(),
        grub_cfg
    );
    let names: Vec<String> = fat
        .read_dir(path::resolve(&*fat, "/EFI", true).unwrap(), 100)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    assert_eq!(names, vec!["ubuntu", "BOOT"]);
}

#[test]
fn debian12_on_logical_partitions_without_cloud_init() {
    if !require(
        "debian12_on_logical_partitions_without_cloud_init",
        &["sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let o = TreeOpts {
        cloud_init: false,
        fstab: "/dev/sda5 / ext4 errors=remount-ro 0 1\n/dev/sda6 /home ext3 defaults 0 2\n/dev/sda1 none swap sw 0 0\n".into(),
        ..TreeOpts::default()
    };
    let (root, _) = linux_tree(w, Distro::Debian12, &o);
    let home = w.join("home");
    std::fs::create_dir_all(home.join("debian")).unwrap();
    let disk = w.join("disk.raw");
    sparse_file(&disk, 64 * MIB);
    sfdisk(
        &disk,
        "label: dos\nstart=2048, size=8192, type=82\nstart=10240, size=120832, type=5\nstart=12288, size=81920, type=83\nstart=96256, size=32768, type=83\n",
    );
    mkfs_ext4(&disk, 12288 * 512, 81920 * 512, &root, &Ext4::default());
    mkfs_ext4(
        &disk,
        96256 * 512,
        32768 * 512,
        &home,
        &Ext4 {
            fs_type: Some("ext3"),
            ..Ext4::default()
        },
    );

    let r = inspect(open_disk(&disk), &opts()).unwrap();
    let idx: Vec<(u32, bool, bool)> = r
        .partition_table
        .partitions
        .iter()
        .map(|p| (p.index, p.logical, p.extended))
        .collect();
    assert_eq!(
        idx,
        vec![
            (1, false, false),
            (2, false, true),
            (5, true, false),
            (6, true, false)
        ]
    );
    assert_eq!(r.partition_table.partitions[2].start, 12288 * 512);
    assert_eq!(r.root, Some(Location::Partition { index: 5 }));
    let homefs = r
        .filesystems
        .iter()
        .find(|f| f.location == Location::Partition { index: 6 })
        .unwrap();
    assert_eq!(
        (homefs.kind.as_str(), homefs.mountpoint.as_deref()),
        ("ext3", Some("/home"))
    );
    let os = r.os.as_ref().unwrap();
    assert_eq!(
        (
            os.os_type.as_str(),
            os.version.as_deref(),
            os.os_name.as_str()
        ),
        ("Debian", Some("12.5"), "Debian 12.5 64bit")
    );
    assert!(!r.cloud_init);
    assert!(r.virtio.block);
}

#[test]
fn opensuse_leap_on_a_bare_filesystem_without_virtio() {
    if !require(
        "opensuse_leap_on_a_bare_filesystem_without_virtio",
        &["mkfs.ext4"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let o = TreeOpts {
        virtio: Virtio::None,
        ..TreeOpts::default()
    };
    let (root, _) = linux_tree(w, Distro::OpenSuseLeap15, &o);
    let disk = w.join("disk.raw");
    sparse_file(&disk, 32 * MIB);
    mkfs_ext4(&disk, 0, 32 * MIB, &root, &Ext4::default());

    let r = inspect(open_disk(&disk), &opts()).unwrap();
    assert_eq!(r.partition_table.kind, TableKind::None);
    assert_eq!(r.root, Some(Location::Disk));
    let os = r.os.as_ref().unwrap();
    assert_eq!(
        (
            os.os_type.as_str(),
            os.major.as_deref(),
            os.os_name.as_str()
        ),
        ("OpenSUSE", Some("15"), "OpenSUSE Leap 15.5 64bit")
    );
    // Not merged-/usr: /bin/sh is a link to bash in /bin itself.
    assert_eq!(os.architecture_from.as_deref(), Some("/bin/sh"));
    assert_eq!(os.kernels.len(), 1);
    assert!(!r.virtio.block && !r.virtio.net);
    assert_eq!(r.virtio.kernels.len(), 1);
}

#[test]
fn rocky9_arm64_with_a_damaged_primary_gpt() {
    if !require(
        "rocky9_arm64_with_a_damaged_primary_gpt",
        &["sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let o = TreeOpts {
        arch: Arch::Arm64,
        ..TreeOpts::default()
    };
    let (root, _) = linux_tree(w, Distro::Rocky9, &o);
    let disk = w.join("disk.raw");
    sparse_file(&disk, 48 * MIB);
    sfdisk(
        &disk,
        "label: gpt\nstart=2048, size=94208, type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE\n",
    );
    mkfs_ext4(&disk, 2048 * 512, 94208 * 512, &root, &Ext4::default());
    // Flip a byte of the primary header: its CRC no longer matches.
    patch(&disk, 512 + 40, &[0xff]);

    let r = inspect(open_disk(&disk), &opts()).unwrap();
    assert_eq!(r.partition_table.kind, TableKind::Gpt);
    assert_eq!(r.partition_table.gpt_header, Some(GptHeader::Backup));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("backup header was used")),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        r.partition_table.partitions[0].type_name,
        Some("linux-root-arm64")
    );
    let os = r.os.as_ref().unwrap();
    assert_eq!(
        (
            os.os_type.as_str(),
            os.major.as_deref(),
            os.version.as_deref()
        ),
        ("Rocky", Some("9"), Some("9.3"))
    );
    assert_eq!(os.architecture.as_deref(), Some("arm_64"));
    assert_eq!(os.os_name, "Rocky Linux 9.3 64bit");
}

#[test]
fn real_debian_bookworm_from_debootstrap() {
    if !require(
        "real_debian_bookworm_from_debootstrap",
        &["sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let tree = match debootstrap_tree() {
        Ok(t) => t,
        Err(why) => {
            skip::skip(&format!("real_debian_bookworm_from_debootstrap: {why}"));
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("debian.raw");
    sparse_file(&disk, 160 * MIB);
    sfdisk(&disk, "label: dos\nstart=2048, type=83, bootable\n");
    mkfs_ext4(
        &disk,
        2048 * 512,
        160 * MIB - 2048 * 512,
        &tree,
        &Ext4::default(),
    );

    let r = inspect(open_disk(&disk), &opts()).unwrap();
    assert_eq!(r.root, Some(Location::Partition { index: 1 }));
    let os = r.os.as_ref().unwrap();
    let expected_version = std::fs::read_to_string(tree.join("etc/debian_version")).unwrap();
    assert_eq!(os.os_type, "Debian");
    assert_eq!(os.major.as_deref(), Some("12"));
    assert_eq!(os.version.as_deref(), Some(expected_version.trim()));
    assert_eq!(os.pretty.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    assert_eq!(os.architecture.as_deref(), Some("x86_64"));
    // debootstrap's minbase has neither a kernel nor cloud-init.
    assert!(os.kernels.is_empty());
    assert!(!r.cloud_init);
    assert!(!r.virtio.block);
    assert!(
        r.stats.bytes_read < 16 * MIB,
        "read {} bytes",
        r.stats.bytes_read
    );
}

#[test]
fn centos7_default_layout_xfs_root_on_lvm() {
    // CentOS 7's installer default: /boot as a partition, root XFS on LVM.
    if !require(
        "centos7_default_layout_xfs_root_on_lvm",
        &["sfdisk", "mkfs.ext4", "mkfs.xfs", "losetup", "pvcreate"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let o = TreeOpts {
        separate_boot: true,
        fstab: "/dev/mapper/centos-root /                       xfs     defaults        0 0\nLABEL=boot /boot                   ext4     defaults        0 0\n".into(),
        ..TreeOpts::default()
    };
    let (root, boot) = linux_tree(w, Distro::CentOS7, &o);
    let disk = w.join("disk.raw");
    let p2 = 26624u64 * 512;
    let p2_size = 400 * MIB;
    sparse_file(&disk, p2 + p2_size);
    sfdisk(&disk, &format!("label: dos\nstart=2048, size=24576, type=83, bootable\nstart=26624, size={}, type=8e\n", p2_size / 512));
    mkfs_ext4(
        &disk,
        2048 * 512,
        12 * MIB,
        &boot.unwrap(),
        &Ext4 {
            label: Some("boot".into()),
            ..Ext4::default()
        },
    );
    let root_lv = LinearLv {
        vg: "centos",
        lv: "root",
        extents: 80,
        segments: &[],
    };
    let pieces = match make_linear_lv_at(w, &disk, p2..p2 + p2_size, &root_lv) {
        Ok(p) => p,
        Err(why) => {
            skip::skip(&format!("centos7_default_layout_xfs_root_on_lvm: {why}"));
            return;
        }
    };
    if let Err(why) = mkfs_xfs(w, &disk, p2 + pieces[0].0, pieces[0].1, &root) {
        skip::skip(&format!("centos7_default_layout_xfs_root_on_lvm: {why}"));
        return;
    }
    let r = inspect(open_disk(&disk), &opts()).unwrap();
    assert_eq!(
        r.root,
        Some(Location::Lv {
            vg: "centos".into(),
            lv: "root".into()
        })
    );
    let rootfs = r
        .filesystems
        .iter()
        .find(|f| f.mountpoint.as_deref() == Some("/"))
        .unwrap();
    assert_eq!(rootfs.kind, "xfs");
    let os = r.os.as_ref().unwrap();
    assert_eq!(os.os_name, "CentOS 7.9 64bit");
    assert_eq!(
        os.kernels[0].image.as_deref(),
        Some("/boot/vmlinuz-3.10.0-1160.el7.x86_64")
    );
    assert!(r.cloud_init && r.virtio.block && r.virtio.net);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

/// The JSON field names are the `imagegate inspect --json` schema
/// (README.md): a rename here breaks its users, so they are pinned.
#[test]
fn json_schema_field_names_are_stable() {
    if !require(
        "json_schema_field_names_are_stable",
        &["sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let (root, _) = linux_tree(w, Distro::Debian12, &TreeOpts::default());
    let disk = w.join("disk.raw");
    sparse_file(&disk, 32 * MIB);
    sfdisk(&disk, "label: dos\nstart=2048, type=83, bootable\n");
    mkfs_ext4(
        &disk,
        2048 * 512,
        32 * MIB - 2048 * 512,
        &root,
        &Ext4::default(),
    );
    let r = inspect(open_disk(&disk), &opts()).unwrap();
    let v = serde_json::to_value(&r).unwrap();
    if std::env::var_os("PRINT_JSON").is_some() {
        println!("{}", serde_json::to_string_pretty(&v).unwrap());
    }
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&v),
        [
            "cloud_init",
            "filesystems",
            "lvm",
            "os",
            "partition_table",
            "root",
            "stats",
            "virtio",
            "warnings"
        ]
    );
    assert_eq!(
        keys(&v["partition_table"]),
        [
            "disk_id",
            "gpt_header",
            "kind",
            "partitions",
            "sector_size",
            "warnings"
        ]
    );
    assert_eq!(
        keys(&v["partition_table"]["partitions"][0]),
        [
            "bootable",
            "extended",
            "guid",
            "index",
            "logical",
            "name",
            "size",
            "start",
            "type_id",
            "type_name"
        ]
    );
    assert_eq!(
        keys(&v["filesystems"][0]),
        ["kind", "label", "mountpoint", "size", "uuid", "where"]
    );
    assert_eq!(
        v["filesystems"][0]["where"],
        serde_json::json!({"kind": "partition", "index": 1})
    );
    assert_eq!(
        v["root"],
        serde_json::json!({"kind": "partition", "index": 1})
    );
    assert_eq!(
        keys(&v["os"]),
        [
            "architecture",
            "architecture_from",
            "id",
            "id_like",
            "kernels",
            "major",
            "name",
            "os_name",
            "os_type",
            "platform",
            "pretty",
            "release_file",
            "version",
            "windows"
        ]
    );
    assert_eq!(
        keys(&v["os"]["kernels"][0]),
        ["image", "modules", "version"]
    );
    assert_eq!(keys(&v["virtio"]), ["block", "kernels", "net"]);
    assert_eq!(keys(&v["virtio"]["kernels"][0]), ["block", "kernel", "net"]);
    assert_eq!(v["virtio"]["kernels"][0]["block"], "module");
    assert_eq!(
        keys(&v["stats"]),
        ["bytes_read", "elapsed_ms", "read_calls"]
    );
    assert_eq!(v["partition_table"]["kind"], "mbr");
}

/// A Windows system volume on an MBR partition is found as the root and
/// handed to the Windows reader; here its SOFTWARE hive is damaged, which
/// must end as a warning with the platform still known (the hive itself is
/// tested in tests/windows.rs).
#[test]
fn windows_root_on_mbr_ntfs_with_a_damaged_hive() {
    if !require(
        "windows_root_on_mbr_ntfs_with_a_damaged_hive",
        &["sfdisk", "mkntfs", "ntfs-3g", "fusermount"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let img = w.join("ntfs.img");
    sparse_file(&img, 32 * MIB);
    run(
        "mkntfs",
        &["-F", "-f", "-q", "-p", "2048", img.to_str().unwrap()],
    );
    let mnt = w.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("ntfs-3g")
        .arg(&img)
        .arg(&mnt)
        .output()
        .unwrap();
    if !mounted.status.success() {
        skip::skip(&format!(
            "windows_root_on_mbr_ntfs_with_a_damaged_hive: ntfs-3g cannot mount here: {}",
            String::from_utf8_lossy(&mounted.stderr).trim()
        ));
        return;
    }
    let fill = || -> std::io::Result<()> {
        let cfg = mnt.join("Windows/System32/config");
        std::fs::create_dir_all(&cfg)?;
        let mut hive = b"regf".to_vec();
        hive.resize(8192, 0xee);
        std::fs::write(cfg.join("SOFTWARE"), hive)?;
        std::fs::create_dir_all(mnt.join("Users/Default"))
    };
    let filled = fill();
    run("fusermount", &["-u", mnt.to_str().unwrap()]);
    filled.unwrap();
    let disk = w.join("disk.raw");
    sparse_file(&disk, 40 * MIB);
    sfdisk(
        &disk,
        "label: dos\nstart=2048, size=65536, type=7, bootable\n",
    );
    copy_into(&img, &disk, 2048 * 512);

    let r = inspect(open_disk(&disk), &opts()).unwrap();
    assert_eq!(r.partition_table.partitions[0].type_name, Some("ntfs"));
    assert_eq!(r.filesystems[0].kind, "ntfs");
    assert_eq!(r.root, Some(Location::Partition { index: 1 }));
    assert_eq!(r.filesystems[0].mountpoint.as_deref(), Some("C:"));
    let os = r.os.as_ref().unwrap();
    assert_eq!(os.platform, "Windows");
    assert!(os.windows.is_none());
    assert!(
        r.warnings.iter().any(|w| w.contains("Windows registry")),
        "{:?}",
        r.warnings
    );
    assert!(!r.cloud_init && !r.virtio.block);
}

/// The same disk in qcow2 (plain and zstd-compressed), VHD and VHDX,
/// read through diskformat's readers, gives the same report as the raw
/// file.
#[test]
fn same_answers_through_containers() {
    if !require(
        "same_answers_through_containers",
        &["sfdisk", "mkfs.ext4", "qemu-img"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let o = TreeOpts {
        fstab: "/dev/sda5 / ext4 errors=remount-ro 0 1\n".into(),
        ..TreeOpts::default()
    };
    let (root, _) = linux_tree(w, Distro::Ubuntu2204, &o);
    let raw = w.join("disk.raw");
    sparse_file(&raw, 32 * MIB);
    sfdisk(
        &raw,
        "label: dos\nstart=2048, size=63488, type=5\nstart=4096, size=61440, type=83\n",
    );
    mkfs_ext4(&raw, 4096 * 512, 61440 * 512, &root, &Ext4::default());
    let mut expected = inspect(open_disk(&raw), &opts()).unwrap();
    assert_eq!(expected.os.as_ref().unwrap().os_type, "Ubuntu");
    expected.stats.elapsed_ms = 0.0;

    for (name, args) in [
        ("qcow2", vec!["-O", "qcow2"]),
        (
            "qcow2-zstd",
            vec!["-c", "-O", "qcow2", "-o", "compression_type=zstd"],
        ),
        (
            "vhd",
            vec!["-O", "vpc", "-o", "subformat=dynamic,force_size=on"],
        ),
        ("vhdx", vec!["-O", "vhdx"]),
    ] {
        let out = w.join(format!("disk.{name}"));
        let mut a = vec!["convert", "-f", "raw"];
        a.extend(args);
        a.push(raw.to_str().unwrap());
        a.push(out.to_str().unwrap());
        run("qemu-img", &a);
        let disk = open_container(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut got = inspect(disk, &opts()).unwrap();
        got.stats = expected.stats.clone();
        assert_eq!(got, expected, "{name}");
    }
}

/// /usr on its own partition under a merged-/usr root: /bin/sh and
/// /etc/os-release are symlinks from the root filesystem into /usr's.
#[test]
fn separate_usr_is_followed_across_filesystems() {
    if !require(
        "separate_usr_is_followed_across_filesystems",
        &["sfdisk", "mkfs.ext4"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let usr_uuid = "5c1d4a9e-8f0b-4d7a-9a51-2b7c0e6f3d18";
    let o = TreeOpts {
        fstab: format!("UUID=0a0a0a0a-0000-4000-8000-000000000001 / ext4 defaults 0 1\nUUID={usr_uuid} /usr ext4 defaults 0 2\n"),
        ..TreeOpts::default()
    };
    let (root, _) = linux_tree(w, Distro::Rocky9, &o);
    let usr = w.join("usr");
    std::fs::rename(root.join("usr"), &usr).unwrap();
    std::fs::create_dir(root.join("usr")).unwrap();
    let disk = w.join("disk.raw");
    sparse_file(&disk, 64 * MIB);
    sfdisk(
        &disk,
        "label: dos\nstart=2048, size=40960, type=83\nstart=43008, size=81920, type=83\n",
    );
    mkfs_ext4(
        &disk,
        2048 * 512,
        40960 * 512,
        &root,
        &Ext4 {
            uuid: Some("0a0a0a0a-0000-4000-8000-000000000001".into()),
            ..Ext4::default()
        },
    );
    mkfs_ext4(
        &disk,
        43008 * 512,
        81920 * 512,
        &usr,
        &Ext4 {
            uuid: Some(usr_uuid.into()),
            ..Ext4::default()
        },
    );

    let r = inspect(open_disk(&disk), &opts()).unwrap();
    assert_eq!(r.root, Some(Location::Partition { index: 1 }));
    assert_eq!(r.filesystems[1].mountpoint.as_deref(), Some("/usr"));
    let os = r.os.as_ref().unwrap();
    assert_eq!(os.os_name, "Rocky Linux 9.3 64bit");
    assert_eq!(os.architecture.as_deref(), Some("x86_64"));
    assert_eq!(os.architecture_from.as_deref(), Some("/bin/sh"));
    assert_eq!(os.kernels.len(), 1);
    assert!(os.kernels[0].modules, "{:?}", os.kernels);
    assert!(r.virtio.block && r.cloud_init);
}
