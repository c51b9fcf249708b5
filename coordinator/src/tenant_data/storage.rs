//! Each tenant's files without a cluster: `<--tenant-storage-dir>/<slug>`,
//! readable by the coordinator's user only. (In a cluster, the tenant's
//! volume claim holds them.)

use std::io;
use std::path::{Path, PathBuf};

/// The directory that holds every tenant's storage directory.
#[derive(Debug, Clone)]
pub struct TenantStorage {
    root: PathBuf,
}

impl TenantStorage {
    pub fn new(root: PathBuf) -> Self {
        TenantStorage { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The tenant `slug`'s directory (a validated slug: one path component).
    pub fn dir(&self, slug: &str) -> PathBuf {
        self.root.join(slug)
    }

    /// Creates the tenant's directory (mode 0700); one left by an earlier
    /// tenant of the same slug must have been removed when it was purged,
    /// so an existing one is an error rather than someone else's files
    /// handed over.
    pub fn create(&self, slug: &str) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.root)?;
        let dir = self.dir(slug);
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir)?;
        Ok(dir)
    }

    /// Removes the tenant's directory and everything in it (purged); gone
    /// already is fine.
    pub fn remove(&self, slug: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.dir(slug)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenants_directory_is_made_private_and_removed_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = TenantStorage::new(tmp.path().join("tenants"));
        let dir = storage.create("acme").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        std::fs::create_dir(dir.join("uploads")).unwrap();
        std::fs::write(dir.join("uploads/logo.png"), b"png").unwrap();
        let again = storage.create("acme").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        storage.remove("acme").unwrap();
        assert!(!dir.exists());
        storage.remove("acme").unwrap();
    }
}
