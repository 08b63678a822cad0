//! Every committed corpus file (`fuzz/corpus/<target>/*`: the seeds and
//! whatever campaigns added) through its target, on every `cargo test`.
//! A parser change that panics or hangs on an input a fuzzer once found
//! fails here in seconds, on the stable toolchain, without libFuzzer.

use std::path::{Path, PathBuf};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_target_has_a_seed_corpus() {
    for target in fuzzing::TARGETS {
        let dir = corpus_root().join(target.name);
        let count = std::fs::read_dir(&dir)
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(count > 0, "{} has no seeds", dir.display());
    }
}

#[test]
fn every_corpus_file_runs_through_its_target() {
    let mut total = 0;
    for target in fuzzing::TARGETS {
        let dir = corpus_root().join(target.name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue; // reported by every_target_has_a_seed_corpus
        };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            // A panic names the file: rerun it with `scripts/fuzz --replay FILE`.
            eprintln!("{}: {}", target.name, path.display());
            (target.run)(&data);
            total += 1;
        }
    }
    eprintln!("replayed {total} corpus files");
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_root().join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("seed")))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{target}: no seed-* files");
    out
}

/// A seed that its parser refuses at the first byte would leave the fuzzer
/// to find the format by chance: each seed must get past the front door.
#[test]
fn seeds_reach_deep_into_their_parsers() {
    use diskformat::{Format, Limits};
    use fuzzing::{OwnedBytes, SparseDisk};
    use guestinspect::fs;
    use std::sync::Arc;

    for (target, format) in [
        ("qcow2", Format::Qcow2),
        ("vmdk", Format::Vmdk),
        ("vhd", Format::Vhd),
        ("vhdx", Format::Vhdx),
    ] {
        for (path, data) in seeds(target) {
            let src = Arc::new(OwnedBytes(data));
            let image = diskformat::open_as(format, src, &Limits::default());
            assert!(image.is_ok(), "{path}: {:?}", image.err());
        }
    }
    for (path, data) in seeds("detect") {
        let found = diskformat::detect(&OwnedBytes(data))
            .expect("detect")
            .format;
        assert_ne!(found, Format::Raw, "{path}");
    }
    for (target, open) in [
        ("fs_ext", fs::ext::open as fs::Opener),
        ("fs_xfs", fs::xfs::open),
        ("fs_btrfs", fs::btrfs::open),
        ("fs_ntfs", fs::ntfs::open),
        ("fs_fat", fs::fat::open),
    ] {
        for (path, data) in seeds(target) {
            let disk = Arc::new(SparseDisk::decode(&data));
            let len = diskformat::ReadAt::len(&*disk);
            let opened = open(disk, 0, len);
            assert!(matches!(opened, Ok(Some(_))), "{path}: not opened");
        }
    }
    for (path, data) in seeds("partitions") {
        let table = guestinspect::part::detect(&SparseDisk::decode(&data)).expect("table");
        assert!(!table.partitions.is_empty(), "{path}");
    }
    for (path, data) in seeds("lvm_pv") {
        let pv = guestinspect::lvm::read_pv(&SparseDisk::decode(&data)).expect("pv");
        assert!(pv.is_some_and(|pv| pv.vg.is_some()), "{path}");
    }
    for (path, data) in seeds("lvm_text") {
        assert!(guestinspect::lvm::text::parse(&data).is_ok(), "{path}");
    }
    for (path, data) in seeds("registry_hive") {
        let hive = guestinspect::windows::hive::Hive::parse(&data).expect(&path);
        assert!(hive.root().is_ok(), "{path}");
    }
    for (path, data) in seeds("inspect") {
        let report = guestinspect::inspect(
            Arc::new(SparseDisk::decode(&data)),
            &guestinspect::InspectOptions::default(),
        )
        .expect("inspect");
        assert!(
            !report.filesystems.is_empty() || path.contains("gpt"),
            "{path}"
        );
    }
}
