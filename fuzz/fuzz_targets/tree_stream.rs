//! Fuzzes the folder stream decoder (`tree::TreeReader`); the checks are
//! `fileapp_core::fuzzing::tree_stream` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::tree_stream(data));
