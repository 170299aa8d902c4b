//! Fuzzes the TLS bulk receive path's record unpacker (`transfer::unpack::Unpacker`); the
//! checks are `fileapp_core::fuzzing::unpack` (see there and `fuzz/README.md`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fileapp_core::fuzzing::unpack(data));
