//! Which backups a retention policy keeps: the newest of each of the last
//! N days, N weeks (ISO weeks) and N months that have a backup, as
//! restic's `forget --keep-daily/--keep-weekly/--keep-monthly` does; a
//! backup any rule keeps is kept.

use std::collections::HashSet;

use chrono::{DateTime, Datelike, Utc};
use knowton_common::Plan;

/// `--backup-retention`: `daily=7,weekly=4,monthly=6` (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            daily: 7,
            weekly: 4,
            monthly: 6,
        }
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    /// Any of `daily=N`, `weekly=N`, `monthly=N`, comma-separated; a rule
    /// left out keeps none. At least one backup must be kept.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut out = Retention {
            daily: 0,
            weekly: 0,
            monthly: 0,
        };
        let mut seen = HashSet::new();
        for part in text.split(',').map(str::trim) {
            let (name, count) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected daily=N, weekly=N or monthly=N"))?;
            let count: u32 = count
                .trim()
                .parse()
                .ok()
                .filter(|n| *n <= 1000)
                .ok_or_else(|| format!("{part:?}: the count must be a whole number up to 1000"))?;
            let slot = match name.trim() {
                "daily" => &mut out.daily,
                "weekly" => &mut out.weekly,
                "monthly" => &mut out.monthly,
                other => {
                    return Err(format!("{other:?}: expected daily, weekly or monthly"));
                }
            };
            if !seen.insert(name.trim().to_owned()) {
                return Err(format!("{name:?} is given twice"));
            }
            *slot = count;
        }
        if out.daily + out.weekly + out.monthly == 0 {
            return Err("the policy keeps no backup at all".to_owned());
        }
        Ok(out)
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "daily={},weekly={},monthly={}",
            self.daily, self.weekly, self.monthly
        )
    }
}

/// `--backup-retention`, and each plan's own where
/// `--backup-retention-<plan>` gives one (an enterprise plan may sell a
/// longer history than a basic one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPolicy {
    pub default: Retention,
    pub basic: Option<Retention>,
    pub professional: Option<Retention>,
    pub enterprise: Option<Retention>,
}

impl RetentionPolicy {
    /// What a tenant on `plan` keeps.
    pub fn for_plan(&self, plan: Plan) -> Retention {
        match plan {
            Plan::Basic => self.basic,
            Plan::Professional => self.professional,
            Plan::Enterprise => self.enterprise,
        }
        .unwrap_or(self.default)
    }
}

impl std::fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.default)?;
        for (plan, own) in [
            ("basic", self.basic),
            ("professional", self.professional),
            ("enterprise", self.enterprise),
        ] {
            if let Some(own) = own {
                write!(f, "; {plan}: {own}")?;
            }
        }
        Ok(())
    }
}

/// The calendar period of a moment: (year, day, week or month).
type Period = fn(&DateTime<Utc>) -> (i32, u32);

impl Retention {
    /// For each of `taken` (any order), whether the policy keeps it.
    pub fn keeps(&self, taken: &[DateTime<Utc>]) -> Vec<bool> {
        let mut order: Vec<usize> = (0..taken.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(taken[i]));
        let mut keep = vec![false; taken.len()];
        let rules: [(u32, Period); 3] = [
            (self.daily, |t| (t.year(), t.ordinal())),
            (self.weekly, |t| {
                let week = t.iso_week();
                (week.year(), week.week())
            }),
            (self.monthly, |t| (t.year(), t.month())),
        ];
        for (count, period) in rules {
            let mut periods = HashSet::new();
            for &i in &order {
                if periods.len() >= count as usize {
                    break;
                }
                // The newest backup of a period is met first.
                if periods.insert(period(&taken[i])) {
                    keep[i] = true;
                }
            }
        }
        keep
    }

    /// For each configuration version taken at `taken`, whether the policy
    /// keeps it at `now`: every version of the last `daily` days (at least
    /// one), so that a restore to any moment of them finds exactly the
    /// configuration of that moment, and before them the newest of each
    /// period, as [`Self::keeps`] (the state at the end of the day, week
    /// or month, which a restore to a date takes).
    pub fn keeps_versions(&self, taken: &[DateTime<Utc>], now: DateTime<Utc>) -> Vec<bool> {
        let recent = now - chrono::Duration::days(i64::from(self.daily.max(1)));
        self.keeps(taken)
            .into_iter()
            .zip(taken)
            .map(|(kept, t)| kept || *t >= recent)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    #[test]
    fn a_plan_keeps_its_own_policy_or_the_default() {
        let policy = RetentionPolicy {
            enterprise: Some("daily=30,monthly=24".parse().unwrap()),
            ..RetentionPolicy::default()
        };
        assert_eq!(policy.for_plan(Plan::Basic), Retention::default());
        assert_eq!(
            policy.for_plan(Plan::Enterprise),
            Retention {
                daily: 30,
                weekly: 0,
                monthly: 24
            }
        );
        assert_eq!(
            policy.to_string(),
            "daily=7,weekly=4,monthly=6; enterprise: daily=30,weekly=0,monthly=24"
        );
    }

    #[test]
    fn policies_parse_and_bad_ones_are_named() {
        assert_eq!(
            "daily=7,weekly=4,monthly=6".parse(),
            Ok(Retention::default())
        );
        assert_eq!(
            "weekly=2".parse(),
            Ok(Retention {
                daily: 0,
                weekly: 2,
                monthly: 0
            })
        );
        for (bad, named) in [
            ("daily", "expected daily=N"),
            ("hourly=3", "\"hourly\""),
            ("daily=-1", "whole number"),
            ("daily=1,daily=2", "twice"),
            ("daily=0", "no backup"),
            ("daily=1000000", "up to 1000"),
        ] {
            let err = bad.parse::<Retention>().unwrap_err();
            assert!(err.contains(named), "{bad}: {err}");
        }
    }

    /// Two backups a day for 100 days: the newest of each of the last 7
    /// days, of the last 4 ISO weeks and of the last 6 months (4 here),
    /// overlapping where they coincide.
    #[test]
    fn the_policy_keeps_exactly_the_newest_of_each_period() {
        let start = at(2026, 6, 1, 2);
        let taken: Vec<_> = (0..200)
            .map(|i| start + chrono::Duration::hours(12 * i))
            .collect();
        let keep = Retention::default().keeps(&taken);
        let kept: Vec<_> = taken
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(t, _)| t.format("%Y-%m-%d %H").to_string())
            .collect();
        // The last backup is 2026-09-08 14:00 (a Tuesday).
        assert_eq!(
            kept,
            [
                "2026-06-30 14", // June
                "2026-07-31 14", // July
                "2026-08-23 14", // ISO week 34
                "2026-08-30 14", // week 35
                "2026-08-31 14", // August, and week 36
                "2026-09-02 14", // daily from here on
                "2026-09-03 14",
                "2026-09-04 14",
                "2026-09-05 14",
                "2026-09-06 14",
                "2026-09-07 14",
                "2026-09-08 14", // also week 37 and September
            ]
        );
    }

    #[test]
    fn of_two_backups_on_one_day_the_newer_is_kept() {
        let taken = [at(2026, 1, 1, 2), at(2026, 1, 1, 3)];
        assert_eq!(Retention::default().keeps(&taken), [false, true]);
        assert_eq!(Retention::default().keeps(&[]), Vec::<bool>::new());
    }

    /// Configuration versions: all of the last `daily` days, then the
    /// newest of each older period the policy keeps.
    #[test]
    fn every_recent_configuration_version_is_kept_and_older_ones_thinned() {
        let now = at(2026, 3, 20, 12);
        let policy = Retention {
            daily: 3,
            weekly: 0,
            monthly: 1,
        };
        let taken = [
            at(2026, 3, 1, 1),   // not the newest of a period kept
            at(2026, 3, 17, 4),  // before the last 3 days, not its day's newest
            at(2026, 3, 17, 5),  // its day's newest
            at(2026, 3, 19, 1),  // within the last 3 days: all kept
            at(2026, 3, 20, 10), // (the policy alone would drop this one)
            at(2026, 3, 20, 11),
        ];
        assert_eq!(
            policy.keeps(&taken),
            [false, false, true, true, false, true]
        );
        assert_eq!(
            policy.keeps_versions(&taken, now),
            [false, false, true, true, true, true]
        );
        let weekly_only = Retention {
            daily: 0,
            weekly: 1,
            monthly: 0,
        };
        assert_eq!(
            weekly_only.keeps_versions(&[at(2026, 3, 19, 13), at(2026, 3, 20, 1)], now),
            [true, true],
            "without daily, versions of the last day are all kept"
        );
    }
}
