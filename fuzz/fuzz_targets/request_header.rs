//! Fuzzes the transfer request header decoder (`transfer::header::Request::decode`); the checks are
//! `fileapp_core::fuzzing::request_header` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::request_header(data));
