//! [`ChangeStore`]: PostgreSQL's `NOTIFY` on one channel per schema;
//! nothing on SQLite.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgListener;
use uuid::Uuid;

use super::{PgStore, SqliteStore};
use crate::store::{Change, ChangeListener, ChangeStore, MAX_CHANGE_BYTES, Result, StoreError};

/// The channel the replicas of one installation listen to:
/// `knowton_changes_` and a digest of the schema, since `NOTIFY` reaches
/// every session of the database, and installations (or test runs) may
/// share one database in schemas of their own.
async fn channel(store: &PgStore) -> Result<&str> {
    store
        .changes_channel
        .get_or_try_init(|| async {
            let schema: String = sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&store.pool)
                .await?;
            let digest = Sha256::digest(schema.as_bytes());
            Ok::<_, StoreError>(format!(
                "knowton_changes_{}",
                knowton_common::hex(&digest[..8])
            ))
        })
        .await
        .map(String::as_str)
}

/// What is sent: the change and the store that announced it.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    origin: Uuid,
    change: Change,
}

#[async_trait]
impl ChangeStore for SqliteStore {
    async fn announce(&self, _change: &Change) -> Result<()> {
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>> {
        Ok(None)
    }
}

#[async_trait]
impl ChangeStore for PgStore {
    async fn announce(&self, change: &Change) -> Result<()> {
        let announcement = Announcement {
            origin: self.origin,
            change: change.clone(),
        };
        let payload = serde_json::to_string(&announcement)
            .map_err(|e| super::corrupt(format!("change: {e}")))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel(self).await?)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(StoreError::Connect)?;
        listener.listen(channel(self).await?).await?;
        Ok(Some(Box::new(PgChanges {
            listener,
            origin: self.origin,
        })))
    }
}

struct PgChanges {
    listener: PgListener,
    /// This store's announcements are skipped.
    origin: Uuid,
}

#[async_trait]
impl ChangeListener for PgChanges {
    async fn next(&mut self) -> Result<Option<Change>> {
        loop {
            let Some(notification) = self.listener.try_recv().await? else {
                return Ok(None);
            };
            let payload = notification.payload();
            if payload.len() > MAX_CHANGE_BYTES {
                tracing::warn!(
                    bytes = payload.len(),
                    "an announced change is too large; reading everything again"
                );
                return Ok(None);
            }
            match serde_json::from_str::<Announcement>(payload) {
                Ok(heard) if heard.origin == self.origin => continue,
                Ok(heard) => return Ok(Some(heard.change)),
                Err(err) => {
                    tracing::warn!(error = %err, "an announced change could not be read; reading everything again");
                    return Ok(None);
                }
            }
        }
    }
}
