//! Guest targets: partition tables, LVM, the registry hive, the OS text
//! files, and the whole inspection as the pipeline runs it.

use crate::input::SparseDisk;
use guestinspect::windows::hive::Hive;
use guestinspect::{lvm, os, part, InspectOptions};
use std::sync::Arc;

pub fn partitions(data: &[u8]) {
    let _ = part::detect(&SparseDisk::decode(data));
}

pub fn lvm_text(data: &[u8]) {
    if let Ok(root) = lvm::text::parse(data) {
        let _ = lvm::text::sections_by_name(&root);
    }
}

/// The PV label, its metadata area and the LV layout built from it.
pub fn lvm_pv(data: &[u8]) {
    let _ = lvm::read_pv(&SparseDisk::decode(data));
}

/// The hive as the Windows detector reads it: the keys and values that say
/// which Windows this is, and a walk down a few levels of made-up names
/// (the lookup code is the same whatever the name).
pub fn registry_hive(data: &[u8]) {
    let Ok(hive) = Hive::parse(data) else {
        return;
    };
    let Ok(root) = hive.root() else {
        return;
    };
    let _ = root.name();
    for path in [
        "Microsoft\\Windows NT\\CurrentVersion",
        "ControlSet001\\Control\\Session Manager\\Environment",
        "Select",
        "a\\b\\c\\d\\e\\f\\g\\h",
    ] {
        if let Ok(Some(key)) = root.subpath(path) {
            for value in [
                "ProductName",
                "CurrentBuild",
                "PROCESSOR_ARCHITECTURE",
                "Current",
                "",
            ] {
                if let Ok(Some(v)) = key.value(value) {
                    let _ = (v.as_str(), v.as_dword());
                }
            }
        }
    }
}

/// os-release and friends, fstab, and the ELF/PE headers that give the
/// architecture: the first byte picks the parser, the rest is the file.
pub fn os_text(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match pick % 7 {
        0 => drop(os::release::from_os_release(&text, "os-release")),
        1 => drop(os::release::from_redhat_release(&text, "redhat-release")),
        2 => drop(os::release::from_suse_release(&text, "SuSE-release")),
        3 => drop(os::release::from_lsb_release(&text, "lsb-release")),
        4 => drop(os::parse_fstab(&text)),
        5 => drop(os::elf::architecture(rest)),
        _ => drop(guestinspect::windows::pe::architecture(rest)),
    }
}

/// The whole inspection of a sparse disk: table, LVM, every filesystem,
/// the OS on its root.
pub fn inspect(data: &[u8]) {
    let disk = Arc::new(SparseDisk::decode(data));
    let _ = guestinspect::inspect(disk, &InspectOptions::default());
}
