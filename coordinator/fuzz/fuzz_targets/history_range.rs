//! `startDate` and `endDate` from arbitrary strings (split at the first
//! NUL; a missing half is an absent parameter): a range in bounds or an
//! error naming one of them, never a panic.
#![no_main]

use knowton_coordinator::api::fuzzing::history_range;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut halves = text.splitn(2, '\0');
    let start = halves.next().filter(|s| !s.is_empty()).map(str::to_owned);
    let end = halves.next().map(str::to_owned);
    history_range(start, end);
});
