//! What is inside a disk image: partition tables, LVM, filesystems, the OS,
//! cloud-init and virtio, read from the guest bytes alone through
//! `diskformat`'s block reader. Nothing is booted or run.

pub mod fs;
