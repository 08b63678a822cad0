//! Live progress of one import, shared between the download, the converter
//! and the heartbeat that records it in the catalog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::domain::ImportPhase;
use crate::source::fetch::FetchProgress;

#[derive(Default)]
pub struct ImportProgress {
    pub fetch: Arc<FetchProgress>,
    pub bytes_converted: AtomicU64,
    pub bytes_written: Arc<AtomicU64>,
    pub virtual_size: AtomicU64,
    /// The import's image, for the one log line per phase change (empty
    /// when the progress belongs to no image, as in unit tests).
    image_id: String,
    text: Mutex<Texts>,
}

#[derive(Default, Clone)]
struct Texts {
    phase: ImportPhase,
    source_format: Option<String>,
}

/// A consistent copy for the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    pub phase: ImportPhase,
    pub bytes_fetched: u64,
    pub bytes_total: u64,
    pub bytes_converted: u64,
    pub bytes_written: u64,
    pub virtual_size: u64,
    pub source_format: Option<String>,
}

impl ImportProgress {
    pub fn new() -> Arc<Self> {
        Self::for_image("")
    }

    /// Progress of `image_id`'s import; phase changes are logged with it.
    pub fn for_image(image_id: &str) -> Arc<Self> {
        let p = ImportProgress {
            image_id: image_id.to_string(),
            ..ImportProgress::default()
        };
        p.set_phase(ImportPhase::Fetching);
        Arc::new(p)
    }

    pub fn set_phase(&self, phase: ImportPhase) {
        let changed = match self.text.lock() {
            Ok(mut t) if t.phase != phase => {
                t.phase = phase;
                true
            }
            _ => false,
        };
        if changed && !self.image_id.is_empty() {
            tracing::info!(
                image_id = %self.image_id,
                phase = phase.as_str(),
                bytes_fetched = self.fetch.bytes_fetched.load(Ordering::Relaxed),
                bytes_total = self.fetch.bytes_total.load(Ordering::Relaxed),
                bytes_written = self.bytes_written.load(Ordering::Relaxed),
                "import phase"
            );
        }
    }

    pub fn set_source_format(&self, info: &diskformat::ImageInfo) {
        if let Ok(mut t) = self.text.lock() {
            t.source_format = Some(match &info.subformat {
                Some(sub) => format!("{} ({sub})", info.format.name()),
                None => info.format.name().to_string(),
            });
        }
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        let t = self.text.lock().map(|t| t.clone()).unwrap_or_default();
        ProgressSnapshot {
            phase: t.phase,
            bytes_fetched: self.fetch.bytes_fetched.load(Ordering::Relaxed),
            bytes_total: self.fetch.bytes_total.load(Ordering::Relaxed),
            bytes_converted: self.bytes_converted.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            virtual_size: self.virtual_size.load(Ordering::Relaxed),
            source_format: t.source_format,
        }
    }
}
