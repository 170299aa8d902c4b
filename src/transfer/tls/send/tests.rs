//! The file reads of the send path: bytes land in the records' payload slots, and only
//! there, from any offset, also after a short read.

use std::io::Write;

use super::*;
use crate::transfer::record::HEADER_LEN;

fn file_of(data: &[u8]) -> File {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(data).unwrap();
    f
}

#[test]
fn file_bytes_land_in_the_payload_slots_only() {
    let data: Vec<u8> = (0..3 * MAX_PAYLOAD + 100)
        .map(|i| (i % 251) as u8)
        .collect();
    let f = file_of(&data);
    let mut buf = vec![0xee; 5 * STRIDE];
    for (pos, want) in [
        (0, data.len()),
        (5, 2 * MAX_PAYLOAD + 1),
        (MAX_PAYLOAD + 1, 10),
    ] {
        buf.fill(0xee);
        read_into_records(&f, &mut buf, pos as u64, want).unwrap();
        let mut slots = vec![false; buf.len()];
        for i in 0..want {
            let at = i / MAX_PAYLOAD * STRIDE + HEADER_LEN + i % MAX_PAYLOAD;
            assert_eq!(buf[at], data[pos + i], "byte {i} from {pos}");
            slots[at] = true;
        }
        let outside = (0..buf.len())
            .filter(|&i| !slots[i] && buf[i] != 0xee)
            .count();
        assert_eq!(outside, 0, "bytes written outside the slots (from {pos})");
    }
}

#[test]
fn slots_resume_inside_a_record_after_a_short_read() {
    let mut buf = vec![0u8; 3 * STRIDE];
    let lens: Vec<usize> = payload_slots(&mut buf, 100, MAX_PAYLOAD + 50)
        .iter()
        .map(|s| s.len())
        .collect();
    assert_eq!(lens, [MAX_PAYLOAD - 100, 50]);
    assert!(payload_slots(&mut buf, 7, 7).is_empty());
}

#[test]
fn a_file_shorter_than_asked_is_an_error() {
    let f = file_of(&[1; 1000]);
    let mut buf = vec![0u8; STRIDE];
    let e = read_into_records(&f, &mut buf, 0, 1001).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(e.to_string(), "file shrank while being sent");
}
