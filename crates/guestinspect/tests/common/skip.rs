//! How a fixture test that cannot run here says so.
//!
//! Outside CI a missing tool (mkfs.xfs, ntfs-3g, …) or a machine that cannot
//! loop-mount skips the test with a line on stderr. `scripts/test` installs
//! every tool and sets `IMAGEGATE_REQUIRE_TOOLS=1`: there a skip is a failure,
//! so a missing package can never turn a test green unnoticed.

/// Skips (prints why) or, under `IMAGEGATE_REQUIRE_TOOLS`, fails the test.
pub fn skip(why: &str) {
    if std::env::var_os("IMAGEGATE_REQUIRE_TOOLS").is_some() {
        panic!("IMAGEGATE_REQUIRE_TOOLS is set, so this test may not skip: {why}");
    }
    eprintln!("SKIPPED {why}");
}
