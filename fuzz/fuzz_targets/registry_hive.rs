#![no_main]
// The body lives in crates/fuzzing, whose tests replay this target's corpus.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::guest::registry_hive(data));
