//! A tenant's health over time: the range parameters, their checks and
//! downsampling to at most [`MAX_POINTS`] points.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::alerts::{Scope, scope};
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{ApiQuery, AppState};
use crate::health::rollup::downsample;
use crate::store::Rollup;

/// Most points a history returns; longer ranges are downsampled.
const MAX_POINTS: i64 = 1440;

/// `2026-11-29` (midnight UTC; as an end, the end of that day),
/// `2026-11-29T12:00:00Z` (RFC 3339) or seconds since the epoch.
/// Between 1970 and the year 9999: anything else is a mistake, and
/// arithmetic on it (a day later, 24 hours earlier) stays in range.
fn parse_instant(field: &str, text: &str, end: bool) -> Result<DateTime<Utc>, ApiError> {
    let at = parse_any_instant(field, text, end)?;
    let earliest = DateTime::UNIX_EPOCH;
    let latest = NaiveDate::from_ymd_opt(10_000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .expect("a valid date");
    if at < earliest || at > latest {
        return Err(ApiError::invalid(
            field,
            format!("{at} is out of range: dates run from 1970-01-01 to 9999-12-31"),
        ));
    }
    Ok(at)
}

fn parse_any_instant(field: &str, text: &str, end: bool) -> Result<DateTime<Utc>, ApiError> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let day = if end {
            day.succ_opt().unwrap_or(day)
        } else {
            day
        };
        if let Some(t) = day.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(secs) = text.parse::<i64>()
        && let Some(t) = DateTime::from_timestamp(secs, 0)
    {
        return Ok(t);
    }
    Err(ApiError::invalid(
        field,
        format!(
            "{text:?} is not a date (2026-11-29), an RFC 3339 timestamp (2026-11-29T12:00:00Z) or seconds since the epoch"
        ),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Start (inclusive): a date, an RFC 3339 timestamp or epoch seconds.
    /// Default: 24 hours before the end.
    pub start_date: Option<String>,
    /// End (exclusive; a date means the end of that day). Default: now.
    pub end_date: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthHistoryView {
    pub tenant: String,
    pub start_date: DateTime<Utc>,
    pub end_date: DateTime<Utc>,
    /// Seconds each point covers (60, or more when downsampled).
    pub resolution_seconds: i64,
    pub points: Vec<Rollup>,
}

/// The range asked for, checked.
fn range(params: &HistoryParams) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let end = match &params.end_date {
        Some(t) => parse_instant("endDate", t, true)?,
        None => Utc::now(),
    };
    let start = match &params.start_date {
        Some(t) => parse_instant("startDate", t, false)?,
        None => end
            .checked_sub_signed(TimeDelta::hours(24))
            .map_or(DateTime::UNIX_EPOCH, |t| t.max(DateTime::UNIX_EPOCH)),
    };
    if start >= end {
        return Err(ApiError::invalid(
            "startDate",
            format!("must be before endDate ({start} is not before {end})"),
        ));
    }
    Ok((start, end))
}

/// A bucket of whole minutes so that the range has at most [`MAX_POINTS`].
fn bucket_for(start: DateTime<Utc>, end: DateTime<Utc>) -> TimeDelta {
    let minutes = (end - start).num_minutes().max(1);
    let per = (minutes + MAX_POINTS - 1) / MAX_POINTS;
    let nice = [1, 5, 15, 30, 60, 180, 360, 720, 1440, 10_080]
        .into_iter()
        .find(|n| *n >= per)
        .unwrap_or(per);
    TimeDelta::minutes(nice)
}

/// What holds for any query strings: a range in bounds with start before
/// end and at most [`MAX_POINTS`] buckets, or an error naming one of the two
/// parameters. For the property test and the fuzz target.
pub(crate) fn check_range(params: &HistoryParams) -> Result<(), String> {
    match range(params) {
        Ok((start, end)) => {
            let bucket = bucket_for(start, end);
            if start >= end || start < DateTime::UNIX_EPOCH {
                return Err(format!("bad range {start} .. {end}"));
            }
            if (end - start).num_minutes() / bucket.num_minutes() > MAX_POINTS {
                return Err(format!("too many points for {start} .. {end}"));
            }
            Ok(())
        }
        Err(err) => match err.detail.field.as_deref() {
            Some("startDate" | "endDate") => Ok(()),
            other => Err(format!("error names {other:?}")),
        },
    }
}

/// The tenant's rollups in range, with the minute in progress.
pub(super) async fn rollups_in(
    state: &AppState,
    slug: &str,
    tenant: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<Rollup>, ApiError> {
    let mut points = state
        .store
        .rollups(tenant, start, end)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if let Some(current) = state
        .engine
        .tenant(slug)
        .and_then(|h| h.current_minute.clone())
        && current.minute >= start
        && current.minute < end
        && points.last().is_none_or(|p| p.minute < current.minute)
    {
        points.push(current);
    }
    Ok(points)
}

/// The tenant's health per minute (status, availability, latency
/// percentiles, error and request rates, storage, users). Ranges longer
/// than 1,440 minutes are downsampled to at most 1,440 points.
#[utoipa::path(get, path = "/api/v1/monitoring/health/history", tag = "monitoring",
    params(HistoryParams, ("X-Tenant-Slug" = String, Header, description = "The tenant's slug")),
    responses((status = 200, body = HealthHistoryView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<HistoryParams>,
) -> Result<Json<HealthHistoryView>, ApiError> {
    let Scope { id: tenant, slug } = required_scope(&state, &caller, &headers).await?;
    let (start, end) = range(&params)?;
    let bucket = bucket_for(start, end);
    let points = rollups_in(&state, &slug, tenant, start, end).await?;
    Ok(Json(HealthHistoryView {
        tenant: slug,
        start_date: start,
        end_date: end,
        resolution_seconds: bucket.num_seconds(),
        points: downsample(&points, bucket),
    }))
}

pub(super) async fn required_scope(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Scope, ApiError> {
    scope(state, caller, headers).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_tenant_slug",
            "X-Tenant-Slug: this route needs the tenant's slug",
        )
        .field("X-Tenant-Slug")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_as_dates_timestamps_or_epoch_seconds() {
        let day: DateTime<Utc> = "2026-11-29T00:00:00Z".parse().unwrap();
        assert_eq!(parse_instant("f", "2026-11-29", false).unwrap(), day);
        assert_eq!(
            parse_instant("f", "2026-11-29", true).unwrap(),
            day + TimeDelta::days(1),
            "an end date covers its whole day"
        );
        assert_eq!(parse_instant("f", "1795910400", false).unwrap(), day);
        assert!(parse_instant("f", "2026-02-30", false).is_err());
    }

    /// Hardening review, finding 12: `endDate` at the edge of chrono's
    /// range made `end - 24 h` overflow and panic the handler.
    #[test]
    fn instants_out_of_range_are_refused_without_panicking() {
        for text in [
            "-8334601228800",
            "8210266876799",
            "262143-12-31",
            "1969-12-30",
        ] {
            let params = HistoryParams {
                start_date: None,
                end_date: Some(text.to_owned()),
            };
            let err = range(&params).unwrap_err();
            assert_eq!(err.detail.field.as_deref(), Some("endDate"), "{text}");
        }
        let params = HistoryParams {
            start_date: None,
            end_date: Some("1970-01-01T12:00:00Z".to_owned()),
        };
        assert_eq!(
            range(&params).unwrap().0,
            DateTime::UNIX_EPOCH,
            "the default start is 24 hours earlier, but not before 1970"
        );
    }

    proptest::proptest! {
        /// Any query strings: a range in bounds, start before end, or an
        /// error naming one of the two parameters; never a panic.
        #[test]
        fn any_history_parameters_give_a_range_or_a_named_error(
            start in proptest::option::of(instant_text()),
            end in proptest::option::of(instant_text()),
        ) {
            let params = HistoryParams { start_date: start, end_date: end };
            if let Err(broken) = check_range(&params) {
                proptest::prop_assert!(false, "{broken}");
            }
        }
    }

    /// Epoch seconds of any size, dates and timestamps of any year, and noise.
    fn instant_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (-300_000i32..300_000, 1u32..13, 1u32..32)
                .prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            (-300_000i32..300_000, 0u32..24)
                .prop_map(|(y, h)| format!("{y:04}-06-15T{h:02}:00:00Z")),
            "\\PC{0,40}",
        ]
    }
}
