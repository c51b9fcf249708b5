//! Which pods to probe.

use std::path::PathBuf;

use serde::Deserialize;

/// One pod to probe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The tenant's slug.
    pub tenant: String,
    /// The pod's name.
    pub pod: String,
    /// Base URL of the pod's backend, e.g. `http://10.0.3.7:3000`.
    pub url: String,
    /// Filesystem path of the pod's volume, for storage usage (targets file only).
    #[serde(default)]
    pub storage_path: Option<PathBuf>,
}
