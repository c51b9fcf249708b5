//! A pod's HTTP/1.1 response, cut into socket reads: never a panic, never
//! a body over the limit. Byte 0 sets the limit, byte 1 the read size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, step, rest @ ..] = data else {
        return;
    };
    let limit = usize::from(*limit) * 16;
    let step = usize::from(*step % 64) + 1;
    if let Ok((_, body, _)) = knowton_agent::fuzzing::read_response(rest.chunks(step), limit) {
        assert!(body.len() <= limit);
    }
});
