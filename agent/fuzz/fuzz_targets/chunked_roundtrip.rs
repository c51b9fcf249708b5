//! Arbitrary bytes, chunk-encoded with sizes taken from the input and read
//! back through arbitrary socket reads, are the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [size, step, body @ ..] = data else {
        return;
    };
    let size = usize::from(*size) + 1;
    let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for chunk in body.chunks(size) {
        response.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        response.extend_from_slice(chunk);
        response.extend_from_slice(b"\r\n");
    }
    response.extend_from_slice(b"0\r\n\r\n");
    let step = usize::from(*step) + 1;
    let (status, read, reusable) =
        knowton_agent::fuzzing::read_response(response.chunks(step), body.len())
            .expect("a valid chunked body reads back");
    assert_eq!((status, &read[..], reusable), (200, body, true));
});
