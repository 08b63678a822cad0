//! Import one disk: fetch the source into a spool while it is hashed, open
//! the container as soon as its header has arrived, and convert the guest
//! data into the stored qcow2 as the bytes come in. Download, hashing,
//! decoding, guest inspection and writing overlap; each byte is read from
//! the network once.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use diskformat::qcow2::{AppendSink, Qcow2Writer};
use diskformat::{DiskImage, Format, FormatError, ReadAt};
use tokio_util::sync::CancellationToken;

use crate::blobstore::{BlobStore, BlobUpload};
use crate::config::Config;
use crate::domain::{FailureCode, ImportPhase};
use crate::pipeline::failure::ImportFailure;
use crate::pipeline::progress::ImportProgress;
use crate::source::fetch::{
    start_fetch_with, FetchError, FetchHandle, FetchOptions, FetchOutcome, FetchProgress, Spool,
};
use crate::source::url::parse_image_url;
use crate::storage::{check_free_space, StorageRefusal};

/// What one imported disk turned out to be.
#[derive(Debug, Clone)]
pub struct DiskOutcome {
    pub source_format: String,
    pub source_subformat: Option<String>,
    pub virtual_size: u64,
    pub stored_size: u64,
    pub source_bytes: u64,
    pub sha256: String,
    pub resumes: u32,
    pub guest: Option<guestinspect::GuestReport>,
}

/// Judges a guest inspection report (Tencent's import checks).
pub type GuestCheck =
    Arc<dyn Fn(&guestinspect::GuestReport) -> Result<(), ImportFailure> + Send + Sync>;

/// Everything `import_disk` needs to know about the disk being imported.
pub struct DiskTask<'a> {
    pub url: &'a str,
    pub app_id: u64,
    pub blob_key: &'a str,
    pub force: bool,
    /// Inspect the guest (the system disk) while converting, and judge it.
    pub guest_check: Option<GuestCheck>,
    pub scratch: &'a Path,
    /// The account's byte quota and use (`None`: no quota).
    pub quota: Option<QuotaUse>,
}

/// The guest view of an opened container, owned, for the inspector. The
/// first container error it meets is kept: a corrupt cluster under the
/// partition table is the image's real fault, not a missing partition.
struct SharedGuest {
    image: Arc<dyn DiskImage>,
    first_error: std::sync::Mutex<Option<ImportFailure>>,
}

impl ReadAt for SharedGuest {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.image.read_guest(offset, buf).map_err(|e| {
            if !matches!(e, FormatError::Io(_)) {
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| ImportFailure::from_format(e.duplicate()));
                }
            }
            e.into_io()
        })
    }
    fn len(&self) -> u64 {
        self.image.virtual_size()
    }
}

/// What may be stored for one disk: the stored-size limit, the account's
/// remaining byte quota, and the data volume's free-space reserve.
#[derive(Debug, Clone)]
pub struct SinkLimits {
    pub max_stored: u64,
    /// The account's byte quota and what it stores already (`None`: no quota).
    pub quota: Option<QuotaUse>,
    /// `limits.min_free_space`, checked on `volume` as the image is written.
    pub reserve: u64,
    pub volume: std::path::PathBuf,
}

/// An account's byte quota and its stored bytes (other images, earlier disks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaUse {
    pub quota: u64,
    pub used: u64,
}

/// The free-space reserve is checked after every this many bytes written.
const RESERVE_CHECK_EVERY: u64 = 16 << 20;

/// Counts what reaches the blob store and stops at the stored-size limit,
/// the quota, or the free-space reserve.
struct LimitedSink {
    upload: Box<dyn BlobUpload>,
    written: Arc<AtomicU64>,
    limits: SinkLimits,
    head_len: u64,
    next_reserve_check: u64,
}

impl AppendSink for LimitedSink {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let total =
            self.written.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
        let stored = total.saturating_add(self.head_len);
        if stored > self.limits.max_stored {
            return Err(io::Error::other(SinkStop::StoredSize));
        }
        if let Some(q) = self.limits.quota {
            if q.used.saturating_add(stored) > q.quota {
                let refusal = StorageRefusal::QuotaExceeded {
                    quota: q.quota,
                    used: q.used,
                };
                return Err(io::Error::other(SinkStop::Storage(refusal)));
            }
        }
        if total >= self.next_reserve_check {
            self.next_reserve_check = total + RESERVE_CHECK_EVERY;
            check_free_space(&self.limits.volume, self.limits.reserve, 0)
                .map_err(|r| io::Error::other(SinkStop::Storage(r)))?;
        }
        self.upload.append(data)?;
        crate::metrics::global().add_bytes_written(data.len() as u64);
        Ok(())
    }

    /// Both blob stores gather appends into large writes (4 MiB aligned
    /// buffers locally, multipart parts on S3).
    fn buffers_appends(&self) -> bool {
        true
    }
}

/// Why the sink refused more bytes.
#[derive(Debug)]
enum SinkStop {
    StoredSize,
    Storage(StorageRefusal),
}

impl std::fmt::Display for SinkStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkStop::StoredSize => f.write_str("stored size limit exceeded"),
            SinkStop::Storage(r) => f.write_str(r.code().as_str()),
        }
    }
}

impl std::error::Error for SinkStop {}

/// Set when guest inspection has failed a check, so the converter stops.
#[derive(Default)]
struct GuestVerdict {
    failed: std::sync::atomic::AtomicBool,
}

/// The sink used only to learn the head length the writer will use.
struct NullSink;

impl AppendSink for NullSink {
    fn append(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

pub async fn import_disk(
    config: &Config,
    blobs: Arc<dyn BlobStore>,
    task: DiskTask<'_>,
    progress: Arc<ImportProgress>,
    cancel: CancellationToken,
) -> Result<DiskOutcome, ImportFailure> {
    let source = parse_image_url(task.url, task.app_id, &config.source)
        .map_err(|e| ImportFailure::new(FailureCode::InvalidUrl, format!("{e}")))?;
    let fetch_progress: Arc<FetchProgress> = progress.fetch.clone();
    let options = FetchOptions {
        stall_timeout: std::time::Duration::from_secs(config.source.stall_timeout_secs.max(1)),
        ..FetchOptions::default()
    };
    // The download stops with the job, or on its own when the converter
    // has failed and needs no more bytes.
    let fetch_cancel = cancel.child_token();
    let mut handle = start_fetch_with(
        &source,
        &config.source,
        &config.limits,
        task.scratch,
        fetch_progress,
        fetch_cancel.clone(),
        &options,
    )
    .await
    .map_err(ImportFailure::from_fetch)?;

    let conversion = conversion(config, blobs, &task, &mut handle, &progress, &cancel);
    let convert = tokio::task::spawn_blocking(move || conversion.run());

    let converted = match convert.await {
        Ok(result) => result,
        Err(join) => Err(ImportFailure::internal(format!(
            "converter crashed: {join}"
        ))),
    };
    if converted.is_err() {
        fetch_cancel.cancel();
    }
    let fetched = (&mut handle.done).await;
    outcome(&task, &handle, converted, fetched)
}

/// The blocking half of one disk's import, over the download's spool
/// (its tail prefetched, when the fetch has one).
fn conversion(
    config: &Config,
    blobs: Arc<dyn BlobStore>,
    task: &DiskTask<'_>,
    handle: &mut FetchHandle,
    progress: &Arc<ImportProgress>,
    cancel: &CancellationToken,
) -> Conversion {
    let spool: Arc<dyn ReadAt> = match handle.tail.take() {
        // Footers and format probes read the end first: serve them from the
        // prefetched tail instead of waiting for the whole download.
        Some(tail) => match diskformat::PrefetchedTail::new(handle.spool.clone(), tail) {
            Ok(wrapped) => Arc::new(wrapped),
            Err(_) => handle.spool.clone(),
        },
        None => handle.spool.clone(),
    };
    Conversion {
        spool,
        download: handle.spool.clone(),
        limits: diskformat::Limits {
            max_virtual_size: config.limits.max_virtual_size,
        },
        sink_limits: SinkLimits {
            max_stored: config.limits.max_stored_size,
            quota: task.quota,
            reserve: config.limits.min_free_space,
            volume: config.data_dir.clone(),
        },
        force: task.force,
        guest_check: task.guest_check.clone(),
        inspect_options: guestinspect::InspectOptions {
            deadline: Some(std::time::Duration::from_secs_f64(
                config.limits.inspect_timeout_secs,
            )),
            max_read_bytes: Some(config.limits.inspect_max_read_bytes),
            ..Default::default()
        },
        runtime: tokio::runtime::Handle::current(),
        blobs,
        blob_key: task.blob_key.to_string(),
        progress: progress.clone(),
        cancel: cancel.clone(),
    }
}

/// The disk's outcome from the converter's and the download's: a broken
/// download explains the converter's read errors, a failed re-read explains
/// why a reader stopped.
fn outcome(
    task: &DiskTask<'_>,
    handle: &FetchHandle,
    converted: Result<DiskOutcome, ImportFailure>,
    fetched: Result<Result<FetchOutcome, FetchError>, tokio::task::JoinError>,
) -> Result<DiskOutcome, ImportFailure> {
    let stats = handle.spool.stats();
    tracing::info!(
        blob = %task.blob_key,
        spool = stats.mode,
        from_ring = stats.from_ring,
        from_file = stats.from_file,
        reread = stats.reread,
        spilled = stats.spilled,
        "source bytes read by the converter and inspector"
    );
    // A reader that had to fetch bytes again and could not: that is why the
    // converter or the inspector stopped.
    let converted = match (converted, handle.reread_failure()) {
        (Err(_), Some(e)) => Err(ImportFailure::from_fetch(e)),
        (c, _) => c,
    };
    match (converted, fetched) {
        (Ok(mut c), Ok(Ok(f))) => {
            c.sha256 = hex::encode(f.sha256);
            c.source_bytes = f.bytes;
            c.resumes = f.resumes;
            Ok(c)
        }
        // We stopped the download because the converter had failed.
        (Err(e), Ok(Err(FetchError::Cancelled))) | (Err(e), Ok(Ok(_))) | (Err(e), Err(_)) => Err(e),
        // A broken download is the root cause of any read error the
        // converter saw, so it wins; but the spool's own internal error
        // (it stopped when the converter did) explains less than a
        // converter's precise failure (a full disk, a bad image).
        (Err(e), Ok(Err(fetch_err))) => {
            let fetch = ImportFailure::from_fetch(fetch_err);
            if fetch.code == FailureCode::InternalError && e.code != FailureCode::InternalError {
                Err(e)
            } else {
                Err(fetch)
            }
        }
        (Ok(_), Ok(Err(fetch_err))) => Err(ImportFailure::from_fetch(fetch_err)),
        (Ok(_), Err(join)) => Err(ImportFailure::internal(format!(
            "download task crashed: {join}"
        ))),
    }
}

/// One disk's conversion, run on a blocking thread: open the container,
/// check the guest beside the conversion, write the stored qcow2, publish.
struct Conversion {
    /// The source as the converter reads it (maybe with a prefetched tail).
    spool: Arc<dyn ReadAt>,
    /// The download behind it, released once the converter is done.
    download: Arc<Spool>,
    limits: diskformat::Limits,
    sink_limits: SinkLimits,
    force: bool,
    guest_check: Option<GuestCheck>,
    /// The inspector's deadline and read budget.
    inspect_options: guestinspect::InspectOptions,
    runtime: tokio::runtime::Handle,
    blobs: Arc<dyn BlobStore>,
    blob_key: String,
    progress: Arc<ImportProgress>,
    cancel: CancellationToken,
}

type GuestThread = std::thread::JoinHandle<Result<guestinspect::GuestReport, ImportFailure>>;

fn join_guest(
    guest: Option<GuestThread>,
) -> Option<Result<guestinspect::GuestReport, ImportFailure>> {
    guest.map(|t| {
        t.join()
            .unwrap_or_else(|_| Err(ImportFailure::internal("guest inspection crashed")))
    })
}

impl Conversion {
    fn run(self) -> Result<DiskOutcome, ImportFailure> {
        let (image, info) = self.open_image()?;
        // Guest inspection runs beside the conversion, on the same reader,
        // and a failed check stops the conversion at once: a bad image
        // fails in seconds, not after its whole download.
        let verdict = Arc::new(GuestVerdict::default());
        let mut guest = self
            .guest_check
            .clone()
            .map(|check| GuestJob {
                image: image.clone(),
                check,
                options: self.inspect_options.clone(),
                verdict: verdict.clone(),
            })
            .map(GuestJob::spawn);
        let (sink, head) = self.write_stored(image.as_ref(), &info, &verdict, &mut guest)?;
        self.progress.set_phase(ImportPhase::InspectingGuest);
        let guest = match join_guest(guest) {
            Some(Ok(report)) => Some(report),
            Some(Err(f)) => {
                sink.upload.abort();
                return Err(f);
            }
            None => None,
        };
        let published = sink
            .upload
            .finish(&head)
            .map_err(|e| ImportFailure::from_write("publishing the stored image failed", &e))?;
        crate::metrics::global().add_bytes_written(head.len() as u64);
        Ok(DiskOutcome {
            source_format: info.format.name().to_string(),
            source_subformat: info.subformat.clone(),
            virtual_size: info.virtual_size,
            stored_size: published,
            source_bytes: 0,
            sha256: String::new(),
            resumes: 0,
            guest,
        })
    }

    /// Detects the container and refuses what cannot be imported as a disk.
    fn open_image(&self) -> Result<(Arc<dyn DiskImage>, diskformat::ImageInfo), ImportFailure> {
        self.progress.set_phase(ImportPhase::InspectingFormat);
        let image: Arc<dyn DiskImage> = Arc::from(
            diskformat::open(self.spool.clone(), &self.limits)
                .map_err(ImportFailure::from_format)?,
        );
        let info = image.info().clone();
        if info.format == Format::Iso && !self.force {
            return Err(ImportFailure::new(
                FailureCode::IsoMustImportByForce,
                "The image is an ISO 9660 file (an installer or a CD image), not a disk. \
                 Import ISO files with Force=true, or install the system and import its disk.",
            ));
        }
        self.progress
            .virtual_size
            .store(info.virtual_size, Ordering::Relaxed);
        self.progress.set_source_format(&info);
        Ok((image, info))
    }

    /// Converts into a new upload of the blob store and finishes the qcow2:
    /// the sink (upload still open) and the head to publish with it.
    fn write_stored(
        &self,
        image: &dyn DiskImage,
        info: &diskformat::ImageInfo,
        verdict: &GuestVerdict,
        guest: &mut Option<GuestThread>,
    ) -> Result<(LimitedSink, Vec<u8>), ImportFailure> {
        let max_stored = self.sink_limits.max_stored;
        self.progress.set_phase(ImportPhase::Converting);
        let min_head = self.blobs.min_head_len();
        let head_len = Qcow2Writer::new(NullSink, info.virtual_size, min_head)
            .map_err(ImportFailure::from_format)?
            .head_len();
        let upload = self
            .runtime
            .block_on(self.blobs.create(&self.blob_key, head_len))
            .map_err(|e| match e {
                crate::blobstore::BlobError::Io(io) => {
                    ImportFailure::from_write("cannot write to the blob store", &io)
                }
                crate::blobstore::BlobError::Unavailable(outage) => {
                    ImportFailure::blob_store_unavailable(&outage)
                }
                e => ImportFailure::internal(format!("cannot write to the blob store: {e}")),
            })?;
        let sink = LimitedSink {
            upload,
            written: self.progress.bytes_written.clone(),
            limits: self.sink_limits.clone(),
            head_len,
            next_reserve_check: 0,
        };
        let mut writer = Qcow2Writer::new(sink, info.virtual_size, min_head)
            .map_err(ImportFailure::from_format)?;
        let converted = diskformat::convert(image, &mut writer, &mut |done| {
            self.progress.bytes_converted.store(done, Ordering::Relaxed);
            !self.cancel.is_cancelled() && !verdict.failed.load(Ordering::SeqCst)
        });
        // Whatever is left of the download need not wait for the converter.
        self.download.release();
        if let Err(e) = converted {
            // Dropping the writer drops the upload, which removes what it wrote.
            drop(writer);
            if self.cancel.is_cancelled() {
                return Err(ImportFailure::cancelled());
            }
            if verdict.failed.load(Ordering::SeqCst) {
                if let Some(Err(f)) = join_guest(guest.take()) {
                    return Err(f);
                }
            }
            return Err(stored_limit_or(e, max_stored));
        }
        self.progress.set_phase(ImportPhase::Storing);
        let (sink, head, _stats) = writer
            .finish()
            .map_err(|e| stored_limit_or(e, max_stored))?;
        let stored_size = head.len() as u64 + sink.written.load(Ordering::Relaxed);
        if stored_size > max_stored {
            sink.upload.abort();
            return Err(ImportFailure::stored_too_large(stored_size, max_stored));
        }
        Ok((sink, head))
    }
}

/// One guest inspection: the image, its judge, the inspector's budget, and
/// the verdict that stops the converter.
struct GuestJob {
    image: Arc<dyn DiskImage>,
    check: GuestCheck,
    options: guestinspect::InspectOptions,
    verdict: Arc<GuestVerdict>,
}

impl GuestJob {
    /// Inspects the guest on a thread of its own; a failed check sets
    /// `verdict`, which stops the converter.
    fn spawn(self) -> GuestThread {
        std::thread::spawn(move || self.run())
    }

    fn run(self) -> Result<guestinspect::GuestReport, ImportFailure> {
        let GuestJob {
            image,
            check,
            options,
            verdict,
        } = self;
        let shared = Arc::new(SharedGuest {
            image,
            first_error: std::sync::Mutex::new(None),
        });
        let disk: Arc<dyn ReadAt> = shared.clone();
        let container_error = || shared.first_error.lock().ok().and_then(|mut e| e.take());
        // The inspector's reads jump around the disk: they must not
        // count as the converter's progress (see `spool::untracked`).
        let inspected = crate::source::spool::untracked(|| guestinspect::inspect(disk, &options));
        let outcome = match inspected {
            Ok(report) => match container_error() {
                Some(f) => Err(f),
                None => match check(&report) {
                    Ok(()) => Ok(report),
                    Err(mut f) => {
                        f.guest = Some(Box::new(report));
                        Err(f)
                    }
                },
            },
            // Out of time or reads: its own code, whatever else broke.
            Err(guestinspect::InspectError::Budget(b)) => Err(ImportFailure::new(
                FailureCode::GuestInspectionTimeout,
                format!(
                    "{b}; the image's partitions or filesystems are laid out so that \
                     inspecting them takes unreasonably long. Rebuild the image, or import \
                     it with fewer partitions and filesystems."
                ),
            )),
            Err(e) => Err(container_error().unwrap_or_else(|| {
                ImportFailure::new(
                    FailureCode::GuestInspectionFailed,
                    format!("the guest disk could not be read for inspection: {e}"),
                )
            })),
        };
        if outcome.is_err() {
            verdict.failed.store(true, Ordering::SeqCst);
        }
        outcome
    }
}

fn stored_limit_or(e: FormatError, max_stored: u64) -> ImportFailure {
    if let FormatError::Io(io) = &e {
        match io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<SinkStop>())
        {
            Some(SinkStop::StoredSize) => {
                return ImportFailure::stored_too_large(max_stored + 1, max_stored)
            }
            Some(SinkStop::Storage(r)) => return ImportFailure::storage(r),
            None => {}
        }
    }
    ImportFailure::from_format(e)
}
