//! Fuzzes the client core's datagram handler (`client::core::ClientCore::handle_datagram`); the checks are
//! `fileapp_core::fuzzing::client` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::client(data));
