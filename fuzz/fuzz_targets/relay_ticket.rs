//! Fuzzes the relay's ticket parser and its pairing state machine's hello handling; the
//! checks are `fileapp_core::fuzzing::relay_ticket` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::relay_ticket(data));
