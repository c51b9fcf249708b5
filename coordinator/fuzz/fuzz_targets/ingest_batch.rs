//! A ResultBatch decoded from arbitrary bytes through the stream's checks
//! and the registry, with or without a cluster (byte 0): never a panic,
//! and what is kept stays within its bounds.
#![no_main]

use knowton_coordinator::ingest::fuzzing::IngestFixture;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, batch @ ..] = data else {
        return;
    };
    let cluster = mode & 1 == 1;
    let mut fixture = IngestFixture::new(cluster);
    let _ = fixture.ingest(batch);
    fixture.check_bounds(cluster);
});
