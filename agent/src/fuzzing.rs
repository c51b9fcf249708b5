//! Entry points for the fuzz targets (`agent/fuzz`): each runs one parser
//! of outside input, as the agent runs it, on arbitrary bytes.

use std::path::Path;

pub use crate::probe::http::read_response;

/// The Prometheus text parser on a scrape's body: the sums of the request
/// counters, of their 5xx series and of the user gauge, or the line at fault.
pub fn prometheus_text(text: &str) -> Result<[Option<f64>; 3], String> {
    crate::probe::metrics::parse(text)
        .map(|s| [s.requests_total, s.errors_5xx_total, s.users])
        .map_err(|err| err.to_string())
}

/// The targets file parser and its checks on a file's contents.
pub fn targets_file(bytes: &[u8]) -> Result<Vec<crate::discover::Target>, String> {
    crate::discover::file::parse_targets(Path::new("targets.yaml"), bytes)
        .map_err(|err| err.to_string())
}
