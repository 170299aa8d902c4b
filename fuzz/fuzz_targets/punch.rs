//! Fuzzes the hole-punch datagrams (`reach::punch`: probe and punch decoders, the punch
//! machine fed the input); the checks are `fileapp_core::fuzzing::punch` (see there and
//! `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::punch(data));
