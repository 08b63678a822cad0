//! The bodies of imagegate's fuzz targets: one function per parser that
//! takes untrusted bytes (each container format, MBR/GPT, LVM, each
//! filesystem, the registry hive reader, the OS text parsers, tcapi request
//! decoding).
//!
//! They live in this stable, ordinary workspace crate so that the same code
//! runs in two places: under libFuzzer (`fuzz/`, nightly, `scripts/fuzz`) for
//! campaigns, and in `tests/replay.rs`, which feeds every committed corpus
//! file through its target on each `cargo test` (seconds, any toolchain).
//!
//! A target's contract is the product's: whatever the bytes, the parser
//! returns a value or an error, without panicking, hanging or allocating
//! beyond its documented bounds. A target never asserts anything else, so a
//! crash is always a parser's fault. Each walk is bounded (entries visited,
//! bytes read), so one input costs milliseconds.

#![forbid(unsafe_code)]

pub mod containers;
pub mod filesystems;
pub mod guest;
mod input;
pub mod wire;

pub use input::{OwnedBytes, SparseDisk};

/// A fuzz target: a name (also its corpus folder, `fuzz/corpus/<name>`) and
/// its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `scripts/fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "detect",
        run: containers::detect,
    },
    Target {
        name: "qcow2",
        run: containers::qcow2,
    },
    Target {
        name: "vmdk",
        run: containers::vmdk,
    },
    Target {
        name: "vhd",
        run: containers::vhd,
    },
    Target {
        name: "vhdx",
        run: containers::vhdx,
    },
    Target {
        name: "refused_formats",
        run: containers::refused_formats,
    },
    Target {
        name: "partitions",
        run: guest::partitions,
    },
    Target {
        name: "lvm_text",
        run: guest::lvm_text,
    },
    Target {
        name: "lvm_pv",
        run: guest::lvm_pv,
    },
    Target {
        name: "fs_ext",
        run: filesystems::ext,
    },
    Target {
        name: "fs_xfs",
        run: filesystems::xfs,
    },
    Target {
        name: "fs_btrfs",
        run: filesystems::btrfs,
    },
    Target {
        name: "fs_ntfs",
        run: filesystems::ntfs,
    },
    Target {
        name: "fs_fat",
        run: filesystems::fat,
    },
    Target {
        name: "registry_hive",
        run: guest::registry_hive,
    },
    Target {
        name: "os_text",
        run: guest::os_text,
    },
    Target {
        name: "inspect",
        run: guest::inspect,
    },
    Target {
        name: "tcapi_request",
        run: wire::request,
    },
];

/// The target called `name`, if any.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
