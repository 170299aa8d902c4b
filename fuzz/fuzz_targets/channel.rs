//! Fuzzes the control channel's receive paths (server and client, each with a real open
//! session); the checks are `fileapp_core::fuzzing::channel` (see there and
//! `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::channel(data));
