//! Feeds arbitrary bytes to the datagram decoder: it must never panic, and whatever it
//! accepts must re-encode (within `MAX_DATAGRAM`) to a datagram that decodes to the same
//! message. Byte identity is not asserted: postcard accepts over-long varints, so two
//! different datagrams may carry the same message.
#![no_main]

use fileapp_core::proto::{MAX_DATAGRAM, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let bytes = msg
        .encode()
        .expect("a decoded message must re-encode within MAX_DATAGRAM");
    assert!(bytes.len() <= MAX_DATAGRAM);
    assert_eq!(
        Message::decode(&bytes).as_ref(),
        Ok(&msg),
        "round trip changed the message"
    );
});
