//! A pause right after an import enters one phase, compiled into debug builds
//! only: the kill -9 tests (tests/conformance/test_kill_sweep.py) use it to
//! land a kill inside a phase that lasts milliseconds (STORING), which a
//! watcher of the log cannot hit reliably on a busy machine.
//!
//! `IMAGEGATE_DEBUG_PAUSE_PHASE=STORING:3000` makes every import wait 3000 ms
//! after it logs STORING and before it does that phase's work. Release
//! builds ignore the variable: the function is empty there.

use crate::domain::ImportPhase;

/// The environment variable: `<PHASE>:<milliseconds>`.
pub const VAR: &str = "IMAGEGATE_DEBUG_PAUSE_PHASE";

#[cfg(debug_assertions)]
pub fn after_entering(phase: ImportPhase) {
    use std::sync::OnceLock;
    use std::time::Duration;

    static PAUSE: OnceLock<Option<(String, Duration)>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        let value = std::env::var(VAR).ok()?;
        let (name, ms) = value.split_once(':')?;
        Some((name.to_string(), Duration::from_millis(ms.parse().ok()?)))
    });
    if let Some((name, duration)) = pause {
        if name == phase.as_str() {
            tracing::warn!(phase = phase.as_str(), ?duration, "{VAR}: pausing");
            std::thread::sleep(*duration);
        }
    }
}

#[cfg(not(debug_assertions))]
pub fn after_entering(_phase: ImportPhase) {}
