#![no_main]
// The body lives in crates/fuzzing, whose tests replay this target's corpus.
libfuzzer_sys::fuzz_target!(
    // libfuzzer-sys aborts on every panic, even one the product catches (the
    // ntfs crate runs behind catch_unwind). A panic that escapes the target
    // still aborts: the harness's own catch_unwind does that.
    init: std::panic::set_hook(Box::new(|_| {})),
    |data: &[u8]| fuzzing::containers::qcow2(data)
);
