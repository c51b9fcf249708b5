//! Deleting old monitoring data: health history, resolved alerts,
//! delivered notifications and ended silences past a retention.

use axum::Json;
use axum::extract::{Extension, State};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{ApiQuery, AppState};
use crate::store::CleanupCounts;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CleanupParams {
    /// Retention: `30d`, `12h` or `90m` (at least 1 hour).
    pub older_than: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupView {
    pub before: DateTime<Utc>,
    pub deleted: CleanupCounts,
}

/// `30d`, `12h`, `90m`.
pub fn parse_age(text: &str) -> Option<TimeDelta> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let number = &text[..text.len() - unit.len_utf8()];
    let n: i64 = number.parse().ok().filter(|n| *n > 0 && *n <= 100_000)?;
    match unit {
        'd' => TimeDelta::try_days(n),
        'h' => TimeDelta::try_hours(n),
        'm' => TimeDelta::try_minutes(n),
        _ => None,
    }
}

/// Delete health history, resolved alerts, delivered notifications and
/// ended silences older than the retention. Admin only.
#[utoipa::path(post, path = "/api/v1/monitoring/cleanup", tag = "monitoring",
    params(CleanupParams),
    responses((status = 200, body = CleanupView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cleanup(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<CleanupParams>,
) -> Result<Json<CleanupView>, ApiError> {
    caller.require_admin()?;
    let age = parse_age(&params.older_than)
        .filter(|age| *age >= TimeDelta::hours(1))
        .ok_or_else(|| {
            ApiError::invalid(
                "olderThan",
                format!(
                    "{:?} is not a retention like 30d, 12h or 90m (at least 1 hour)",
                    params.older_than
                ),
            )
        })?;
    let before = Utc::now() - age;
    let deleted = state
        .store
        .cleanup(before)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    tracing::info!(before = %before, ?deleted, actor = %caller.actor(), "monitoring data cleaned up");
    Ok(Json(CleanupView { before, deleted }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_nonsense_is_refused_without_panicking() {
        assert_eq!(parse_age("30d"), Some(TimeDelta::days(30)));
        assert_eq!(parse_age(" 12h "), Some(TimeDelta::hours(12)));
        assert_eq!(parse_age("90m"), Some(TimeDelta::minutes(90)));
        for bad in ["", "d", "30", "30y", "-1d", "0h", "\u{80}", "3\u{80}", "1é"] {
            assert_eq!(parse_age(bad), None, "{bad:?}");
        }
    }
}
