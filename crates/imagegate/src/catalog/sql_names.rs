//! The catalog's statements name states and phases as SQL literals (a
//! statement reads better whole than stitched from constants). This test
//! holds every such literal to the typed vocabularies of `crate::domain`, so
//! a typo, or a name the enums no longer know, fails here rather than as a
//! row that never matches.

use crate::domain::{ExportPhase, ImageState, ImportPhase, TaskState};

/// The catalog's sources, by name.
const SOURCES: &[(&str, &str)] = &[
    ("blobs.rs", include_str!("blobs.rs")),
    ("delete.rs", include_str!("delete.rs")),
    ("export_jobs.rs", include_str!("export_jobs.rs")),
    ("exports.rs", include_str!("exports.rs")),
    ("images.rs", include_str!("images.rs")),
    ("imports.rs", include_str!("imports.rs")),
    ("jobs/claim.rs", include_str!("jobs/claim.rs")),
    ("jobs/mod.rs", include_str!("jobs/mod.rs")),
    ("jobs/outcome.rs", include_str!("jobs/outcome.rs")),
    ("jobs/tasks.rs", include_str!("jobs/tasks.rs")),
    ("mod.rs", include_str!("mod.rs")),
    ("shares.rs", include_str!("shares.rs")),
    ("sync.rs", include_str!("sync.rs")),
    ("visibility.rs", include_str!("visibility.rs")),
];

/// Failure codes written by SQL itself (the rest are bound as parameters).
const FAILURE_CODES_IN_SQL: &[&str] = &["ExportCancelled"];

/// Every `'word'` of two or more letters or underscores: in these files that
/// is an SQL text literal (Rust's `'_'` and lifetimes are shorter or lack
/// the closing quote).
fn quoted_words(source: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find('\'') {
        let after = &rest[start + 1..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphabetic() || c == '_'))
            .unwrap_or(after.len());
        if len >= 2 && after[len..].starts_with('\'') {
            words.push(&after[..len]);
            rest = &after[len + 1..];
        } else {
            rest = after;
        }
    }
    words
}

fn known(word: &str) -> bool {
    word.parse::<ImageState>().is_ok()
        || word.parse::<TaskState>().is_ok()
        || word.parse::<ImportPhase>().is_ok()
        || word.parse::<ExportPhase>().is_ok()
        || FAILURE_CODES_IN_SQL.contains(&word)
}

#[test]
fn every_state_and_phase_named_in_sql_is_in_the_vocabularies() {
    let mut seen = 0;
    for (file, source) in SOURCES {
        for word in quoted_words(source) {
            assert!(
                known(word),
                "catalog/{file}: SQL literal '{word}' is no known name"
            );
            seen += 1;
        }
    }
    // The scan itself works: the catalog does name states in its SQL.
    assert!(seen > 50, "only {seen} literals found");
}

#[test]
fn the_scan_finds_literals_and_flags_strangers() {
    let words = quoted_words("state = 'RUNNING' AND phase = 'queued' OR x = '_' fn f<'a>()");
    assert_eq!(words, ["RUNNING", "queued"]);
    assert!(known("RUNNING") && !known("queued"));
}
