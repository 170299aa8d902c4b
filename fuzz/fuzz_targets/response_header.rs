//! Fuzzes the transfer response header decoder (`transfer::header::Response::decode`); the checks are
//! `fileapp_core::fuzzing::response_header` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::response_header(data));
