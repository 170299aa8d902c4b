//! Fuzzes the TLS 1.3 record opener (`transfer::record::Opener`); the checks are
//! `fileapp_core::fuzzing::record` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::record(data));
