//! `imagegate inspect` on real images: a CentOS-7-like system disk made from
//! scratch with sfdisk and `mkfs.ext4 -d`, converted by qemu-img to every
//! container it writes, and hostile files (a backing file, a VMDK extent
//! naming a host file, a 1 PiB claim, random bytes, two signatures, a FIFO).
//! qemu-img is the oracle for the virtual size; the JSON object is checked
//! field by field and the table for its key lines.
//!
//! The tools (qemu-utils, fdisk, e2fsprogs) are required: a missing one
//! fails the test with the package to install.

use imagegate::inspect_cmd::{self, InspectArgs};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIB: u64 = 1 << 20;
const KVER: &str = "3.10.0-1160.el7.x86_64";

fn tool(cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd} ({e}): apt-get install qemu-utils fdisk e2fsprogs")
        });
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(s.as_bytes())
            .expect("writing stdin");
    }
    let out = child.wait_with_output().expect("waiting for the tool");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// The CentOS 7 files the detectors look at, as in
/// tests/conformance/diskimages.py.
fn centos7_tree(root: &Path, cloud_init: bool, virtio: bool) {
    for d in [
        "etc/cloud".to_string(),
        "usr/bin".to_string(),
        "usr/sbin".to_string(),
        "boot".to_string(),
        format!("lib/modules/{KVER}/kernel/drivers/block"),
        format!("lib/modules/{KVER}/kernel/drivers/net"),
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(
        root.join("etc/os-release"),
        "NAME=\"CentOS Linux\"\nVERSION=\"7 (Core)\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\n\
         VERSION_ID=\"7\"\nPRETTY_NAME=\"CentOS Linux 7 (Core)\"\nANSI_COLOR=\"0;31\"\n\
         CPE_NAME=\"cpe:/o:centos:centos:7\"\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/centos-release"),
        "CentOS Linux release 7.9.2009 (Core)\n",
    )
    .unwrap();
    symlink("centos-release", root.join("etc/redhat-release")).unwrap();
    fs::write(root.join("etc/fstab"), "UUID=0 / ext4 defaults 1 1\n").unwrap();
    // A real ELF binary: the architecture is read from its header.
    fs::copy("/bin/sh", root.join("usr/bin/sh")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("usr/sbin", root.join("sbin")).unwrap();
    fs::write(root.join(format!("boot/vmlinuz-{KVER}")), [0u8; 4096]).unwrap();
    if cloud_init {
        fs::write(
            root.join("etc/cloud/cloud.cfg"),
            "datasource_list: [ ConfigDrive, TencentCloud ]\n",
        )
        .unwrap();
        fs::write(root.join("usr/bin/cloud-init"), "#!/usr/bin/python\n").unwrap();
    }
    if virtio {
        let m = root.join(format!("lib/modules/{KVER}/kernel/drivers"));
        fs::write(m.join("block/virtio_blk.ko.xz"), b"").unwrap();
        fs::write(m.join("net/virtio_net.ko.xz"), b"").unwrap();
    }
}

/// A 64 MiB sparse raw disk: an MBR (or GPT) with one bootable Linux
/// partition at 1 MiB holding a 32 MiB ext4 root made from the tree.
fn linux_disk(dir: &Path, name: &str, cloud_init: bool, virtio: bool) -> PathBuf {
    disk_with_label(dir, name, "dos", cloud_init, virtio)
}

fn disk_with_label(dir: &Path, name: &str, label: &str, cloud_init: bool, virtio: bool) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    centos7_tree(&tree, cloud_init, virtio);
    let disk = dir.join(name);
    fs::File::create(&disk).unwrap().set_len(64 * MIB).unwrap();
    tool(
        "sfdisk",
        &["-q", "--no-reread", "--no-tell-kernel", p(&disk)],
        Some(&format!(
            "label: {label}\nstart=2048, size=65536, type=linux{}\n",
            if label == "dos" { ", bootable" } else { "" }
        )),
    );
    tool(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            p(&tree),
            "-E",
            "offset=1048576",
            p(&disk),
            "32768k",
        ],
        None,
    );
    fs::remove_dir_all(&tree).unwrap();
    disk
}

fn qemu_virtual_size(path: &Path, fmt: &str) -> u64 {
    let info: Value = serde_json::from_str(&tool(
        "qemu-img",
        &["info", "-f", fmt, "--output=json", p(path)],
        None,
    ))
    .expect("qemu-img info JSON");
    info["virtual-size"].as_u64().expect("virtual-size")
}

/// Sum of the extents `qemu-img map` reports as data.
fn qemu_data_bytes(path: &Path, fmt: &str) -> u64 {
    let map: Value = serde_json::from_str(&tool(
        "qemu-img",
        &["map", "-f", fmt, "--output=json", p(path)],
        None,
    ))
    .expect("qemu-img map JSON");
    map.as_array()
        .expect("a list of extents")
        .iter()
        .filter(|e| e["data"] == true)
        .map(|e| e["length"].as_u64().expect("length"))
        .sum()
}

/// `run` with `--json`: the exit code and the parsed object.
fn inspect_json(path: &Path) -> (i32, Value) {
    let mut out = Vec::new();
    let code = inspect_cmd::run(
        &InspectArgs {
            file: path.to_path_buf(),
            json: true,
        },
        &mut out,
    )
    .expect("writing to a Vec cannot fail");
    let v: Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out)));
    (code, v)
}

fn inspect_table(path: &Path) -> (i32, String) {
    let mut out = Vec::new();
    let code = inspect_cmd::run(
        &InspectArgs {
            file: path.to_path_buf(),
            json: false,
        },
        &mut out,
    )
    .expect("writing to a Vec cannot fail");
    (code, String::from_utf8(out).expect("the table is UTF-8"))
}

fn check_codes(v: &Value) -> Vec<String> {
    v["import_checks"]
        .as_array()
        .expect("import_checks is an array")
        .iter()
        .map(|c| c["code"].as_str().expect("code").to_string())
        .collect()
}

fn refused_with(v: &Value, code: &str) {
    assert_eq!(v["verdict"]["accepted"], false, "{v:#}");
    assert_eq!(v["verdict"]["code"], code, "{v:#}");
    assert!(
        v["verdict"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v:#}"
    );
    assert!(v["guest"].is_null(), "a refused image is never read: {v:#}");
    assert_eq!(check_codes(v), Vec::<String>::new());
}

/// The guest facts every conversion of the CentOS disk must show.
fn assert_centos_guest(v: &Value, what: &str) {
    let g = &v["guest"];
    assert_eq!(g["partition_table"]["kind"], "mbr", "{what}: {g:#}");
    let parts = g["partition_table"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{what}");
    assert_eq!(parts[0]["start"], MIB, "{what}");
    assert_eq!(parts[0]["bootable"], true, "{what}");
    let fss = g["filesystems"].as_array().unwrap();
    assert_eq!(fss.len(), 1, "{what}: {g:#}");
    assert_eq!(fss[0]["kind"], "ext4", "{what}");
    assert_eq!(fss[0]["mountpoint"], "/", "{what}");
    assert_eq!(fss[0]["size"], 32 * MIB, "{what}");
    assert_eq!(g["root"]["kind"], "partition", "{what}");
    assert_eq!(g["root"]["index"], 1, "{what}");
    let os = &g["os"];
    assert_eq!(os["platform"], "Linux", "{what}");
    assert_eq!(os["os_type"], "CentOS", "{what}");
    assert_eq!(os["major"], "7", "{what}");
    assert_eq!(os["architecture"], "x86_64", "{what}");
    assert!(
        os["os_name"].as_str().unwrap().starts_with("CentOS 7"),
        "{what}: {os:#}"
    );
    assert_eq!(os["kernels"][0]["version"], KVER, "{what}");
    assert_eq!(g["cloud_init"], true, "{what}");
    assert_eq!(g["virtio"]["block"], true, "{what}");
    assert_eq!(g["virtio"]["net"], true, "{what}");
    assert!(g["stats"]["bytes_read"].as_u64().unwrap() > 0, "{what}");
}

/// (file name, qemu-img format, qemu-img options, our format, our subformat)
type Case<'a> = (&'a str, &'a str, &'a [&'a str], &'a str, Option<&'a str>);

#[test]
fn every_container_of_a_centos_disk_is_accepted_and_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let raw = linux_disk(dir.path(), "centos.raw", true, true);
    let cases: &[Case] = &[
        ("centos.raw", "raw", &[], "raw", None),
        ("centos.qcow2", "qcow2", &[], "qcow2", Some("v3")),
        (
            "centos-zlib.qcow2",
            "qcow2",
            &["-c", "-o", "compat=0.10"],
            "qcow2",
            Some("v2"),
        ),
        (
            "centos.vmdk",
            "vmdk",
            &["-o", "subformat=streamOptimized"],
            "vmdk",
            Some("streamOptimized"),
        ),
        ("centos.vhd", "vpc", &[], "vhd", Some("dynamic")),
        ("centos.vhdx", "vhdx", &[], "vhdx", Some("dynamic")),
    ];
    for &(name, qfmt, opts, fmt, sub) in cases {
        let path = dir.path().join(name);
        if qfmt != "raw" {
            let mut args = vec!["convert", "-f", "raw", "-O", qfmt];
            args.extend_from_slice(opts);
            args.extend([p(&raw), p(&path)]);
            tool("qemu-img", &args, None);
        }
        let (code, v) = inspect_json(&path);
        assert_eq!(code, 0, "{name}: {v:#}");
        assert_eq!(v["schema"], 1);
        assert_eq!(v["file"], p(&path));
        assert_eq!(v["verdict"]["accepted"], true, "{name}: {v:#}");
        assert!(v["verdict"]["code"].is_null());
        let c = &v["container"];
        assert_eq!(c["format"], fmt, "{name}");
        if let Some(sub) = sub {
            assert_eq!(c["subformat"], sub, "{name}: {c:#}");
        }
        assert_eq!(
            c["virtual_size"].as_u64(),
            Some(qemu_virtual_size(&path, qfmt)),
            "{name}: virtual size differs from qemu-img info"
        );
        assert_eq!(
            c["file_size"].as_u64(),
            Some(fs::metadata(&path).unwrap().len()),
            "{name}"
        );
        assert_eq!(c["allocated_size_complete"], true, "{name}");
        let alloc = c["allocated_size"].as_u64().unwrap();
        match fmt {
            // Raw has no map: every byte is data.
            "raw" => assert_eq!(alloc, 64 * MIB),
            // qemu-img has no block status for VHDX (it maps every byte as
            // data); the stored blocks are in the file.
            "vhdx" => assert!(
                alloc > 0 && alloc < c["file_size"].as_u64().unwrap(),
                "{name}: allocated {alloc}"
            ),
            _ => assert_eq!(
                alloc,
                qemu_data_bytes(&path, qfmt),
                "{name}: allocated size differs from qemu-img map"
            ),
        }
        assert_centos_guest(&v, name);
        assert_eq!(check_codes(&v), Vec::<String>::new(), "{name}: {v:#}");
        // The whole run reads more than the guest inspection alone (the
        // headers and maps too), and far less than the disk.
        let read = v["stats"]["file_bytes_read"].as_u64().unwrap();
        let guest_read = v["guest"]["stats"]["bytes_read"].as_u64().unwrap();
        assert!(read > guest_read && read < 16 * MIB, "{name}: read {read}");
    }

    let (code, table) = inspect_table(&dir.path().join("centos.qcow2"));
    assert_eq!(code, 0);
    for line in [
        "Format            qcow2 (v3)",
        "Virtual size      64 MiB (67108864 bytes)",
        "Cluster size      64 KiB (65536 bytes)",
        "Verdict           accepted",
        "Partition table   MBR",
        "Root              partition 1",
        "OS type           CentOS (platform Linux, version 7",
        "Architecture      x86_64 (from ",
        "Cloud-init        yes",
        "Virtio            block yes, net yes",
        "  all pass",
        "Read              ",
    ] {
        assert!(table.contains(line), "missing {line:?} in:\n{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.contains(KVER) && l.contains("module")),
        "kernel row with virtio modules missing:\n{table}"
    );
}

#[test]
fn missing_cloud_init_and_virtio_are_listed_as_import_failures() {
    let dir = tempfile::tempdir().unwrap();
    let raw = linux_disk(dir.path(), "bare.raw", false, false);
    let (code, v) = inspect_json(&raw);
    // The container is fine and the OS is recognised: exit 0; the import
    // checks say what a non-forced import would refuse, in the pipeline's
    // order.
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["guest"]["os"]["os_type"], "CentOS");
    assert_eq!(v["guest"]["cloud_init"], false);
    assert_eq!(v["guest"]["virtio"]["block"], false);
    assert_eq!(
        check_codes(&v),
        ["VirtioNotInstall", "CloudInitNotInstalled"]
    );
    let (_, table) = inspect_table(&raw);
    assert!(table.contains("Cloud-init        no"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("  VirtioNotInstall  ")),
        "{table}"
    );
}

#[test]
fn a_gpt_disk_needs_uefi_and_every_failing_check_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let raw = disk_with_label(dir.path(), "gpt.raw", "gpt", false, true);
    let (code, v) = inspect_json(&raw);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["guest"]["partition_table"]["kind"], "gpt", "{v:#}");
    assert_eq!(v["guest"]["os"]["os_type"], "CentOS");
    // The import stops at GptRequiresUefi; inspect goes on to the next.
    assert_eq!(
        check_codes(&v),
        ["GptRequiresUefi", "CloudInitNotInstalled"]
    );
}

#[test]
fn a_backing_file_is_refused_and_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("backed.qcow2");
    tool(
        "qemu-img",
        &[
            "create",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "/etc/hostname",
            "-F",
            "raw",
            p(&img),
            "64M",
        ],
        None,
    );
    let (code, v) = inspect_json(&img);
    assert_eq!(code, 1);
    refused_with(&v, "ExternalReferenceRefused");
    assert_eq!(v["verdict"]["stage"], "open");
    assert_eq!(v["container"]["format"], "qcow2");
    let (code, table) = inspect_table(&img);
    assert_eq!(code, 1);
    assert!(
        table.contains("Verdict           refused: ExternalReferenceRefused"),
        "{table}"
    );
    assert!(!table.contains("Import checks"), "{table}");
}

#[test]
fn a_vmdk_descriptor_naming_a_host_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("flat.vmdk");
    fs::write(
        &img,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\n# Extent description\n\
         RW 2048 FLAT \"/etc/hostname\" 0\n\n# The Disk Data Base\n#DDB\n\n\
         ddb.virtualHWVersion = \"4\"\n",
    )
    .unwrap();
    let (code, v) = inspect_json(&img);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["container"]["format"], "vmdk", "{v:#}");
    refused_with(&v, "ExternalReferenceRefused");
}

#[test]
fn a_petabyte_claim_is_invalid_format_size() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("huge.qcow2");
    tool("qemu-img", &["create", "-f", "qcow2", p(&img), "1P"], None);
    let (code, v) = inspect_json(&img);
    assert_eq!(code, 1);
    refused_with(&v, "InvalidFormatSize");
    // Nothing was sized from the claim.
    assert!(v["container"]["virtual_size"].is_null());
    assert!(v["container"]["allocated_size"].is_null());
}

#[test]
fn random_bytes_are_a_raw_disk_without_a_partition_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("noise.bin");
    // xorshift64: reproducible noise without a dependency.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..MIB)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(&img, &bytes).unwrap();
    let (code, v) = inspect_json(&img);
    assert_eq!(code, 2, "accepted but no OS: {v:#}");
    assert_eq!(v["verdict"]["accepted"], true);
    assert_eq!(v["container"]["format"], "raw");
    assert_eq!(v["container"]["virtual_size"], MIB);
    assert_eq!(v["guest"]["partition_table"]["kind"], "none");
    assert!(v["guest"]["os"].is_null());
    assert_eq!(check_codes(&v), ["PartitionNotPresent"]);
    let (code, table) = inspect_table(&img);
    assert_eq!(code, 2);
    assert!(table.contains("Partition table   none"), "{table}");
    assert!(
        table.contains("OS                not recognised"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("  PartitionNotPresent  ")),
        "{table}"
    );
}

#[test]
fn two_signatures_are_ambiguous_and_both_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("twofaced.img");
    // A LUKS magic at 0 and an ISO 9660 descriptor at 32 KiB.
    let mut data = vec![0u8; 64 << 10];
    data[..6].copy_from_slice(b"LUKS\xba\xbe");
    data[32769..32774].copy_from_slice(b"CD001");
    fs::write(&img, &data).unwrap();
    let (code, v) = inspect_json(&img);
    assert_eq!(code, 1);
    refused_with(&v, "AmbiguousImageFormat");
    assert_eq!(v["verdict"]["stage"], "detect");
    let matched: Vec<&str> = v["container"]["formats_matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(matched, ["luks", "iso"]);
    let (_, table) = inspect_table(&img);
    assert!(table.contains("Signatures        luks, iso"), "{table}");
}

#[test]
fn an_iso_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("cd.iso");
    let mut data = vec![0u8; 256 << 10];
    data[32768] = 1; // primary volume descriptor
    data[32769..32774].copy_from_slice(b"CD001");
    fs::write(&img, &data).unwrap();
    let (code, v) = inspect_json(&img);
    assert_eq!(v["verdict"]["accepted"], true, "{v:#}");
    assert_eq!(v["container"]["format"], "iso");
    assert_eq!(code, 2);
    let codes = check_codes(&v);
    assert_eq!(
        codes.first().map(String::as_str),
        Some("InvalidParameterValue.ISOMustImportByForce"),
        "{v:#}"
    );
}

#[test]
fn a_fifo_or_a_missing_file_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // Opening a FIFO for reading normally blocks until a writer comes; the
    // test would hang here if `inspect` did that.
    let (code, v) = inspect_json(&fifo);
    assert_eq!(code, 1);
    refused_with(&v, "SourceReadError");
    assert_eq!(v["verdict"]["stage"], "file");
    assert!(v["container"]["file_size"].is_null());
    assert_eq!(v["stats"]["file_bytes_read"], 0);

    let (code, v) = inspect_json(&dir.path().join("absent.qcow2"));
    assert_eq!(code, 1);
    refused_with(&v, "SourceReadError");
}

/// Bytes flipped in the headers and tables of every container, and the
/// files cut short: each run must end in a report (accepted or refused with
/// a code), never a panic, and quickly.
#[test]
fn mutated_and_truncated_containers_end_in_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let raw = linux_disk(dir.path(), "seed.raw", true, true);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (qfmt, opts) in [
        ("qcow2", &[][..]),
        ("vmdk", &["-o", "subformat=streamOptimized"][..]),
        ("vmdk", &["-o", "subformat=monolithicSparse"][..]),
        ("vpc", &[][..]),
        ("vhdx", &[][..]),
    ] {
        let seed = dir.path().join(format!("seed.{qfmt}"));
        let mut args = vec!["convert", "-f", "raw", "-O", qfmt];
        args.extend_from_slice(opts);
        args.extend([p(&raw), p(&seed)]);
        tool("qemu-img", &args, None);
        let original = fs::read(&seed).unwrap();
        let victim = dir.path().join(format!("victim.{qfmt}"));
        let mut refused = 0;
        for round in 0..40 {
            let mut data = original.clone();
            if round % 4 == 3 {
                // Cut short anywhere.
                let keep = (next() % data.len() as u64) as usize;
                data.truncate(keep);
            } else {
                // A few bytes in the first 64 KiB or the last 4 KiB, where
                // the headers, tables and footers are.
                for _ in 0..1 + next() % 8 {
                    let at = if next() % 4 == 0 {
                        data.len() - 1 - (next() % 4096.min(data.len() as u64)) as usize
                    } else {
                        (next() % (64 << 10).min(data.len() as u64)) as usize
                    };
                    data[at] = next() as u8;
                }
            }
            fs::write(&victim, &data).unwrap();
            let started = std::time::Instant::now();
            let (code, v) = inspect_json(&victim);
            let (code2, _) = inspect_table(&victim);
            assert_eq!(code, code2);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{qfmt} round {round} took {:?}",
                started.elapsed()
            );
            assert_eq!(v["schema"], 1);
            let accepted = v["verdict"]["accepted"].as_bool().unwrap();
            if accepted {
                assert!(v["guest"].is_object(), "{v:#}");
                assert!([0, 2].contains(&code), "{v:#}");
            } else {
                refused += 1;
                assert_eq!(code, 1);
                assert!(v["verdict"]["code"].is_string(), "{v:#}");
            }
        }
        // Every fourth round cuts the file short: some must be
        // refused, or the mutations never reached the parser.
        assert!(refused > 0, "{qfmt}: no mutation was refused");
    }
}

/// `imagegate inspect … | head` closes the pipe early: the command still
/// ends with the verdict's exit code, not an error; other write errors are
/// errors.
#[test]
fn a_closed_pipe_still_gives_the_exit_code() {
    struct Closed(std::io::ErrorKind);
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(self.0.into())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let args = InspectArgs {
        file: dir.path().join("absent.raw"),
        json: true,
    };
    let code = inspect_cmd::run(&args, &mut Closed(std::io::ErrorKind::BrokenPipe));
    assert_eq!(code.unwrap(), 1);
    let full = inspect_cmd::run(&args, &mut Closed(std::io::ErrorKind::StorageFull));
    assert!(full.is_err());
}
