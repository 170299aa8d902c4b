//! Fuzzes the control datagram decoder (`proto::Message::decode`); the checks are
//! `fileapp_core::fuzzing::datagram` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::datagram(data));
