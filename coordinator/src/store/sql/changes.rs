//! [`ChangeStore`]: PostgreSQL's `NOTIFY` on one channel; nothing on SQLite.

use async_trait::async_trait;
use sqlx::postgres::PgListener;

use super::{PgStore, SqliteStore};
use crate::store::{Change, ChangeListener, ChangeStore, MAX_CHANGE_BYTES, Result, StoreError};

/// The channel every replica listens to.
const CHANNEL: &str = "knowton_changes";

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
        let payload =
            serde_json::to_string(change).map_err(|e| super::corrupt(format!("change: {e}")))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn listen(&self) -> Result<Option<Box<dyn ChangeListener>>> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(StoreError::Connect)?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Box::new(PgChanges { listener })))
    }
}

struct PgChanges {
    listener: PgListener,
}

#[async_trait]
impl ChangeListener for PgChanges {
    async fn next(&mut self) -> Result<Option<Change>> {
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
        match serde_json::from_str(payload) {
            Ok(change) => Ok(Some(change)),
            Err(err) => {
                tracing::warn!(error = %err, "an announced change could not be read; reading everything again");
                Ok(None)
            }
        }
    }
}
