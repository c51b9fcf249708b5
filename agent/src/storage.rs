//! Volume usage of a tenant pod, read from the filesystem holding its volume.

use std::path::Path;

use knowton_proto::agent::v1::StorageSample;

/// Used and total bytes of the filesystem that holds `path`.
///
/// Used counts every block that is not free (as `df` does), including the
/// blocks reserved for root; capacity is the filesystem's size.
pub fn volume_usage(path: &Path) -> std::io::Result<StorageSample> {
    let stat = rustix::fs::statvfs(path)?;
    let used_blocks = stat.f_blocks.saturating_sub(stat.f_bfree);
    Ok(StorageSample {
        used_bytes: used_blocks.saturating_mul(stat.f_frsize),
        capacity_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_filesystem_holding_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let sample = volume_usage(dir.path()).unwrap();
        assert!(sample.capacity_bytes > 0, "{sample:?}");
        assert!(sample.used_bytes <= sample.capacity_bytes, "{sample:?}");
    }

    #[test]
    fn a_missing_path_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = volume_usage(&dir.path().join("absent")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
