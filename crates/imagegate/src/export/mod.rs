//! Exporting stored images (ExportImages): every disk of an image written
//! to a bucket the caller owns, in RAW, QCOW2, VHD or VMDK, by diskformat's
//! own writers, as a durable task that workers run.
//!
//! - `names`: bucket names, file name prefixes, object keys;
//! - `room`: the data volume's reserve when the bucket folder is on it, and
//!   what a full disk means for an export;
//! - `target`: the bucket back-ends (the `cos_root` folder, the
//!   `cos_endpoint` S3 store) and objects that appear only when complete;
//! - `folder`: the folder's objects, written past the page cache;
//! - `stored`: the stored qcow2 read back as a guest disk;
//! - `run`: one attempt at one task;
//! - `worker`: the slots that claim tasks, heartbeat and record outcomes.
//!
//! The DescribeExportImageTasks view of a task is the API's (`api`).

pub mod folder;
pub mod names;
pub mod room;
pub mod run;
pub mod stored;
pub mod target;
pub mod worker;

pub use worker::ExportWorkers;
