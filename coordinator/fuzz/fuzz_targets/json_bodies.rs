//! Request bodies from arbitrary bytes through the API's JSON parser, as
//! provisioning, updates, usage and notification channels read them.
#![no_main]

use knowton_coordinator::api::fuzzing::json_bodies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| json_bodies(data));
