//! Fuzzes the certificate key extraction (`transfer::cert::ed25519_key_of`); the checks are
//! `fileapp_core::fuzzing::cert` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::cert(data));
