//! The targets file: never a panic, at most one target per byte.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(targets) = knowton_agent::fuzzing::targets_file(data) {
        assert!(targets.len() <= data.len());
    }
});
