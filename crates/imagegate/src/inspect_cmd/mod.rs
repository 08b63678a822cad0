//! `imagegate inspect FILE [--json]`: `qemu-img info` and `virt-inspector`
//! in one, safe on untrusted files.
//!
//! It opens exactly the one file named on the command line (refusing
//! anything that is not a regular file, so a FIFO cannot hang it), runs the
//! same detection and safety rules as ImportImage (`diskformat::open`), and
//! only if the container is accepted reads the guest through
//! `guestinspect`. Nothing external is run and no second file is ever
//! opened: a backing file or extent named inside the image is a refusal,
//! not a path to follow. The output is an aligned table for people, or one
//! JSON object whose fields are documented in `crates/imagegate/INSPECT.md`.
//!
//! Exit codes: 0 = the container is accepted and an operating system was
//! recognised; 1 = the image is refused or cannot be read; 2 = the
//! container is accepted but no operating system was recognised on it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diskformat::detect::{detect_bytes, PROBES, PROBE_LEN};
use diskformat::{DiskImage, ExtentKind, FileSource, Format, FormatError, Limits, ReadAt};
use guestinspect::{GuestReport, InspectOptions};
use serde::Serialize;

use crate::domain::FailureCode;
use crate::pipeline::guest_checks::{self, Declared};

mod table;
pub use table::render_table;

/// Version of the JSON object; bumped only if a field changes meaning or
/// goes away (new fields may appear without a bump).
pub const SCHEMA: u32 = 1;

pub const EXIT_ACCEPTED: i32 = 0;
pub const EXIT_REFUSED: i32 = 1;
pub const EXIT_NO_GUEST: i32 = 2;

/// The allocated-size walk stops after this many `extent_at` calls, this
/// many container bytes read for it, or this long, and then reports a lower
/// bound: a hostile container with millions of alternating extents must not
/// turn `inspect` into a full read of the file.
const MAX_EXTENT_CALLS: u64 = 1 << 16;
const MAX_WALK_BYTES: u64 = 64 << 20;
const MAX_WALK_TIME: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// The image file (raw, qcow2, VMDK, VHD, VHDX, ISO). Only this file is
    /// opened; files the image names are never followed.
    pub file: PathBuf,
    /// Print one JSON object (schema: crates/imagegate/INSPECT.md).
    #[arg(long)]
    pub json: bool,
}

/// Everything `inspect` found: the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    pub schema: u32,
    pub file: String,
    pub container: Container,
    pub verdict: Verdict,
    pub guest: Option<GuestReport>,
    pub import_checks: Vec<ImportCheck>,
    pub stats: Stats,
}

/// What the whole inspection cost.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    /// Bytes read from the file: detection, header and table checks, the
    /// allocation walk and the guest inspection together.
    pub file_bytes_read: u64,
    pub elapsed_ms: f64,
}

/// Container facts: what `qemu-img info` would say, from our own parser.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Container {
    /// The detected format; null when detection itself failed.
    pub format: Option<Format>,
    /// Every format whose signature the file carries (more than one is the
    /// `AmbiguousImageFormat` refusal; empty for raw).
    pub formats_matched: Vec<Format>,
    pub subformat: Option<String>,
    pub virtual_size: Option<u64>,
    pub file_size: Option<u64>,
    /// Bytes of the guest disk the container maps as data.
    pub allocated_size: Option<u64>,
    /// False when the walk stopped at its bound: `allocated_size` is then a
    /// lower bound.
    pub allocated_size_complete: bool,
    pub cluster_size: Option<u64>,
    pub compression: Option<String>,
    pub notes: Vec<String>,
}

/// The safety verdict: would ImportImage accept this container?
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub accepted: bool,
    /// `FormatError::code()` of the refusal (null when accepted).
    pub code: Option<String>,
    pub message: Option<String>,
    /// Where it was refused: "file", "detect", "open", "map" or "guest".
    pub stage: Option<&'static str>,
}

/// One reason a non-forced ImportImage of this file would fail, declaring
/// the OS, version and architecture that were detected and the default
/// `BootMode` (Legacy BIOS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportCheck {
    pub code: FailureCode,
    pub message: String,
}

impl InspectReport {
    /// The exit code `run` returns for this report.
    pub fn exit_code(&self) -> i32 {
        if !self.verdict.accepted {
            EXIT_REFUSED
        } else if self.guest.as_ref().is_some_and(|g| g.os.is_some()) {
            EXIT_ACCEPTED
        } else {
            EXIT_NO_GUEST
        }
    }
}

/// Run `imagegate inspect`: print the report to `out`, return the exit code.
/// Errors are only failures to write `out`; everything about the file is in
/// the report.
pub fn run(args: &InspectArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let report = inspect_file(&args.file);
    match print(&report, args.json, out) {
        Ok(()) => Ok(report.exit_code()),
        // The reader went away (`inspect … | head`): what it read was
        // right, and the verdict still is.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(report.exit_code()),
        Err(e) => Err(e.into()),
    }
}

fn print(report: &InspectReport, json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
    } else {
        out.write_all(render_table(report).as_bytes())?;
    }
    out.flush()
}

/// Inspect one file. Never panics on its content; every refusal is in
/// `verdict`.
pub fn inspect_file(path: &Path) -> InspectReport {
    let started = Instant::now();
    let mut report = InspectReport {
        schema: SCHEMA,
        file: path.display().to_string(),
        container: Container::default(),
        verdict: Verdict {
            accepted: true,
            code: None,
            message: None,
            stage: None,
        },
        guest: None,
        import_checks: Vec::new(),
        stats: Stats::default(),
    };
    match open_regular(path) {
        Ok(src) => {
            report.container.file_size = Some(src.len());
            let counter = Arc::new(Counting {
                inner: src,
                bytes: AtomicU64::new(0),
            });
            inspect_source(&mut report, &counter);
            report.stats.file_bytes_read = counter.bytes.load(Ordering::Relaxed);
        }
        Err(e) => refuse(&mut report, "file", &FormatError::Io(e)),
    }
    report.stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    report
}

/// Everything after the file is open; stops at the first refusal.
fn inspect_source(report: &mut InspectReport, counter: &Arc<Counting>) {
    let src: Arc<dyn ReadAt> = counter.clone();

    // Detection is run here, probe by probe, so that every matching
    // signature can be named, not only the first two in a message; `open_as`
    // then inspects the container it found.
    let format = match probe_all(&*src) {
        Ok((matched, detected)) => {
            report.container.formats_matched = matched;
            match detected {
                Ok(f) => {
                    report.container.format = Some(f);
                    f
                }
                Err(e) => {
                    refuse(report, "detect", &e);
                    return;
                }
            }
        }
        Err(e) => {
            refuse(report, "detect", &e);
            return;
        }
    };

    let image: Arc<dyn DiskImage> = match diskformat::open_as(format, src, &Limits::default()) {
        Ok(i) => Arc::from(i),
        Err(e) => {
            refuse(report, "open", &e);
            return;
        }
    };
    let info = image.info();
    report.container.format = Some(info.format);
    report.container.subformat = info.subformat.clone();
    report.container.virtual_size = Some(info.virtual_size);
    report.container.cluster_size = info.cluster_size;
    report.container.compression = info.compression.clone();
    report.container.notes = info.notes.clone();

    match allocated(&*image, counter) {
        Ok((bytes, complete)) => {
            report.container.allocated_size = Some(bytes);
            report.container.allocated_size_complete = complete;
        }
        Err(e) => {
            // The conversion of an import walks the same maps, so a map
            // that cannot be walked is an import failure too.
            refuse(report, "map", &e);
            return;
        }
    }

    let disk: Arc<dyn ReadAt> = Arc::new(Guest(image));
    match guestinspect::inspect(disk, &InspectOptions::default()) {
        Ok(g) => {
            report.import_checks = import_checks(report.container.format, &g);
            report.guest = Some(g);
        }
        Err(e) => {
            report.verdict = Verdict {
                accepted: false,
                code: Some("GuestInspectionFailed".to_string()),
                message: Some(format!(
                    "the guest disk could not be read for inspection: {e}"
                )),
                stage: Some("guest"),
            };
        }
    }
}

fn refuse(report: &mut InspectReport, stage: &'static str, e: &FormatError) {
    report.verdict = Verdict {
        accepted: false,
        code: Some(e.code().to_string()),
        message: Some(e.to_string()),
        stage: Some(stage),
    };
}

/// Open the file read-only without blocking (a FIFO would otherwise wait
/// for a writer) and accept only a regular file: a device or FIFO has no
/// trustworthy length, a directory no content.
fn open_regular(path: &Path) -> std::io::Result<FileSource> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    FileSource::from_file(file)
}

/// Every probe on the head and tail (the same 64 KiB ends `detect` reads),
/// and `detect`'s own decision on them.
type Probed = (Vec<Format>, Result<Format, FormatError>);

fn probe_all(src: &dyn ReadAt) -> Result<Probed, FormatError> {
    let len = src.len();
    let n = len.min(PROBE_LEN);
    let mut head = vec![0u8; n as usize];
    src.read_at(0, &mut head)
        .map_err(|e| FormatError::from_read(e, "the image head"))?;
    let mut tail = vec![0u8; n as usize];
    src.read_at(len - n, &mut tail)
        .map_err(|e| FormatError::from_read(e, "the image tail"))?;
    let matched = PROBES
        .iter()
        .filter(|(_, probe)| probe(&head, &tail, len))
        .map(|(f, _)| *f)
        .collect();
    Ok((matched, detect_bytes(&head, &tail, len).map(|d| d.format)))
}

/// Sum of the data extents, walked with a bounded number of calls, bytes
/// and time. Returns (bytes, complete).
fn allocated(image: &dyn DiskImage, counter: &Counting) -> Result<(u64, bool), FormatError> {
    let size = image.virtual_size();
    let start_bytes = counter.bytes.load(Ordering::Relaxed);
    let started = Instant::now();
    let (mut pos, mut data, mut calls) = (0u64, 0u64, 0u64);
    while pos < size {
        if calls >= MAX_EXTENT_CALLS
            || counter.bytes.load(Ordering::Relaxed) - start_bytes > MAX_WALK_BYTES
            || started.elapsed() > MAX_WALK_TIME
        {
            return Ok((data, false));
        }
        calls += 1;
        let e = image.extent_at(pos, size - pos)?;
        // A zero-length or backwards extent would loop for ever: the
        // container's map is broken.
        if e.len == 0 || e.offset != pos || e.len > size - pos {
            return Err(FormatError::Corrupt(format!(
                "the container maps an empty or misplaced extent at guest offset {pos}"
            )));
        }
        if e.kind == ExtentKind::Data {
            data += e.len;
        }
        pos += e.len;
    }
    Ok((data, true))
}

/// Counts the container bytes read, to bound the allocated-size walk.
struct Counting {
    inner: FileSource,
    bytes: AtomicU64,
}

impl ReadAt for Counting {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.read_at(offset, buf)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

/// The guest disk as an owned `ReadAt` (guestinspect keeps its reader in
/// `Arc`s, which the borrowing `diskformat::GuestReader` cannot be).
struct Guest(Arc<dyn DiskImage>);

impl ReadAt for Guest {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_guest(offset, buf).map_err(FormatError::into_io)
    }
    fn len(&self) -> u64 {
        self.0.virtual_size()
    }
}

/// What a non-forced ImportImage would refuse, judged by the import
/// pipeline's own guest checks (`pipeline::guest_checks::check`) with the
/// detected OS, version and architecture declared (so OsMismatch and
/// ArchitectureMismatch cannot arise) and the default BootMode, Legacy BIOS.
/// The import stops at the first failure; to list every one, each failure
/// that later checks do not depend on is set right in a copy of the report
/// (or of the declaration) and the checks run again.
pub fn import_checks(format: Option<Format>, g: &GuestReport) -> Vec<ImportCheck> {
    let mut out = Vec::new();
    if format == Some(Format::Iso) {
        // The pipeline refuses this before guest inspection, in disk.rs.
        out.push(ImportCheck {
            code: FailureCode::IsoMustImportByForce,
            message: "The image is an ISO 9660/UDF file (an installer or a CD image), not a \
                      disk: ImportImage takes it only with Force=true."
                .to_string(),
        });
    }
    let os = g.os.as_ref();
    let mut declared = Declared {
        os_type: os.map_or("", |o| o.os_type.as_str()),
        os_version: os.and_then(|o| o.major.as_deref()).unwrap_or(""),
        architecture: os
            .and_then(|o| o.architecture.as_deref())
            .unwrap_or("x86_64"),
        boot_mode: "Legacy BIOS",
        force: false,
    };
    let mut report = g.clone();
    // One round per check that can be set right, plus the last one.
    for _ in 0..4 {
        let Err(f) = guest_checks::check(&report, &declared) else {
            break;
        };
        out.push(ImportCheck {
            code: f.code,
            message: f.message,
        });
        match f.code {
            FailureCode::GptRequiresUefi => declared.boot_mode = "UEFI",
            FailureCode::VirtioNotInstall => {
                report.virtio.block = true;
                report.virtio.net = true;
            }
            FailureCode::CloudInitNotInstalled => report.cloud_init = true,
            // No partition, no root, no OS: the later checks are about
            // the OS, so they have nothing to judge.
            _ => break,
        }
    }
    out
}
