//! A pod's Prometheus text exposition: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = knowton_agent::fuzzing::prometheus_text(&text);
});
