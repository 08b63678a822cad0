//! Live progress of one import, shared between the download, the converter
//! and the heartbeat that records it in the catalog.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// When the current phase began.
    since: Option<Instant>,
    /// Wall time spent in each phase so far (the current one excluded), in
    /// the order the phases were first entered.
    spent: Vec<(ImportPhase, Duration)>,
}

impl Texts {
    fn add_spent(&mut self, phase: ImportPhase, d: Duration) {
        match self.spent.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, total)) => *total += d,
            None => self.spent.push((phase, d)),
        }
    }
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
            Ok(mut t) if t.phase != phase || t.since.is_none() => {
                let now = Instant::now();
                if let Some(since) = t.since {
                    let current = t.phase;
                    t.add_spent(current, now - since);
                }
                t.phase = phase;
                t.since = Some(now);
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
            super::phase_pause::after_entering(phase);
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

    /// Wall time per phase so far, the current phase's included. The
    /// download runs under every phase: FETCHING is the wait for the first
    /// bytes the format probe needs.
    pub fn phase_times(&self) -> Vec<(ImportPhase, Duration)> {
        let Ok(t) = self.text.lock() else {
            return Vec::new();
        };
        let mut t = t.clone();
        if let Some(since) = t.since {
            let current = t.phase;
            t.add_spent(current, since.elapsed());
        }
        t.spent
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_times_add_up_per_phase_in_first_entered_order() {
        let p = ImportProgress::for_image("");
        std::thread::sleep(Duration::from_millis(20));
        p.set_phase(ImportPhase::Converting);
        std::thread::sleep(Duration::from_millis(20));
        p.set_phase(ImportPhase::Storing);
        p.set_phase(ImportPhase::Converting);
        std::thread::sleep(Duration::from_millis(20));
        let times = p.phase_times();
        let phases: Vec<_> = times.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            phases,
            [
                ImportPhase::Fetching,
                ImportPhase::Converting,
                ImportPhase::Storing
            ]
        );
        assert!(times[0].1 >= Duration::from_millis(20));
        // Both stretches of CONVERTING, the current one included.
        assert!(times[1].1 >= Duration::from_millis(40), "{times:?}");
    }
}
