//! Deep verification: a backup is restored for real into a scratch
//! database or directory and compared with what its manifest recorded
//! (every table's rows and checksum; every file's size, time, mode and
//! content), then the scratch copy is removed. A backup that passes this
//! has been restored once, not only read.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use super::database;
use super::manifest::{Content, Manifest, TableCheck};
use super::storage;
use super::{BackupError, Backups, remove_tree};

impl Backups {
    /// [`Backups::verify`], then, if every object is sound, a restore into
    /// a scratch place compared with the manifest. Returns the problems,
    /// each naming the object, table or path.
    pub async fn verify_deep(&self, manifest: &Manifest) -> Vec<String> {
        let problems = self.verify(manifest).await;
        if !problems.is_empty() {
            // A restore would stop at the first of them.
            return problems;
        }
        match &manifest.content {
            Content::Database {
                chunks,
                tables,
                tables_truncated,
                ..
            } => {
                let Some(databases) = self.data.databases.as_ref() else {
                    return vec![
                        "cannot restore a database backup here: tenants have no databases (no --tenant-database-url)"
                            .to_owned(),
                    ];
                };
                let (scratch, role) = match databases.create_scratch(manifest.tenant).await {
                    Ok(made) => made,
                    Err(err) => {
                        return vec![format!(
                            "failed to make a scratch database: {}",
                            knowton_common::error_chain(&err)
                        )];
                    }
                };
                let restored = async {
                    database::restore(
                        &self.repo,
                        manifest.tenant,
                        chunks,
                        databases,
                        &scratch,
                        &role,
                        &AtomicU64::new(0),
                    )
                    .await?;
                    let mut conn = databases.connect_to(&scratch).await?;
                    let checks = database::table_checks(&mut conn).await;
                    let _ = sqlx::Connection::close(conn).await;
                    checks
                }
                .await;
                if let Err(err) = databases.drop_scratch(&scratch).await {
                    tracing::warn!(database = %scratch, error = %knowton_common::error_chain(&err), "failed to drop a scratch database; the next verification drops it");
                }
                match restored {
                    Ok((restored, _)) => compare_tables(tables, *tables_truncated, &restored),
                    Err(err) => vec![format!(
                        "restoring into a scratch database failed: {}",
                        knowton_common::error_chain(&err)
                    )],
                }
            }
            Content::Storage { entries, .. } => {
                let Some(files) = self.data.storage.as_ref() else {
                    return vec![
                        "cannot restore a storage backup here: tenants' files are not on this host"
                            .to_owned(),
                    ];
                };
                let scratch = files
                    .root()
                    .join(format!(".knowton-verify-{}", manifest.id.simple()));
                let _ = remove_scratch(&scratch).await;
                if let Err(err) = storage::restore(
                    &self.repo,
                    manifest.tenant,
                    entries,
                    &scratch,
                    &AtomicU64::new(0),
                )
                .await
                {
                    let _ = remove_scratch(&scratch).await;
                    return vec![format!(
                        "restoring into a scratch directory failed: {}",
                        knowton_common::error_chain(&err)
                    )];
                }
                let sealer = self.repo.sealer().clone();
                let (dir, expected) = (scratch.clone(), entries.clone());
                let compared =
                    tokio::task::spawn_blocking(move || storage::compare(&dir, &expected, &sealer))
                        .await
                        .unwrap_or_else(|e| vec![format!("the comparison stopped: {e}")]);
                if let Err(err) = remove_scratch(&scratch).await {
                    tracing::warn!(dir = %scratch.display(), error = %err, "failed to remove a scratch directory");
                }
                compared
            }
            // The manifest is the whole backup: opening it was the check.
            Content::Configuration { .. } => Vec::new(),
        }
    }
}

async fn remove_scratch(dir: &Path) -> Result<(), BackupError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || match remove_tree(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|source| BackupError::Write { path: dir, source }),
    })
    .await
    .unwrap_or(Ok(()))
}

/// The differences between the tables a backup recorded and those its
/// restore holds, each naming the table.
pub fn compare_tables(
    recorded: &[TableCheck],
    truncated: bool,
    restored: &[TableCheck],
) -> Vec<String> {
    let mut problems = Vec::new();
    for want in recorded {
        match restored.iter().find(|t| t.table == want.table) {
            None => problems.push(format!("table {} is missing from the restore", want.table)),
            Some(got) if got.rows != want.rows => problems.push(format!(
                "table {}: {} rows restored, the backup recorded {}",
                want.table, got.rows, want.rows
            )),
            Some(got) if got.checksum != want.checksum => problems.push(format!(
                "table {}: the restored rows differ from the backup's checksum",
                want.table
            )),
            Some(_) => {}
        }
    }
    if !truncated {
        for got in restored {
            if !recorded.iter().any(|t| t.table == got.table) {
                problems.push(format!(
                    "table {} is in the restore but the backup recorded no such table",
                    got.table
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, rows: i64, checksum: &str) -> TableCheck {
        TableCheck {
            table: name.to_owned(),
            rows,
            checksum: checksum.to_owned(),
        }
    }

    #[test]
    fn tables_are_compared_by_name_rows_and_checksum() {
        let recorded = [table("public.a", 3, "10"), table("public.b", 1, "5")];
        assert!(compare_tables(&recorded, false, &recorded).is_empty());
        let restored = [table("public.a", 2, "10"), table("public.c", 0, "0")];
        assert_eq!(
            compare_tables(&recorded, false, &restored),
            [
                "table public.a: 2 rows restored, the backup recorded 3",
                "table public.b is missing from the restore",
                "table public.c is in the restore but the backup recorded no such table",
            ]
        );
        let altered = [table("public.a", 3, "11"), table("public.b", 1, "5")];
        assert_eq!(
            compare_tables(&recorded, false, &altered),
            ["table public.a: the restored rows differ from the backup's checksum"]
        );
        assert!(
            compare_tables(&recorded[..1], true, &recorded).is_empty(),
            "a truncated list checks only the tables it lists"
        );
    }
}
