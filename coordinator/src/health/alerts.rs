//! The life of one alert per (tenant, check), as a pure state machine fed
//! one evaluation at a time. It decides transitions; the caller persists
//! them and the notifications they cause in one transaction.
//!
//! - A check crossing its warning or critical threshold opens an alert at
//!   that severity; a warning that becomes critical escalates the same
//!   alert in place (its severity history is the list of transitions).
//! - The alert resolves after the check has been within its thresholds for
//!   `resolve_after` consecutive evaluations (hysteresis), so one good
//!   result between bad ones does not resolve and re-open it.
//! - A check whose state changes more than `flap_changes` times within
//!   `flap_window` is flapping: one notification, then silence until it
//!   has been stable for the window; it then resolves or fires again.
//! - Evaluations without data (`Unknown`) change nothing.

use std::collections::VecDeque;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use knowton_common::health::{CheckState, Severity};

/// Tuning of alert life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertPolicy {
    /// Consecutive evaluations within thresholds before an alert resolves.
    pub resolve_after: u32,
    /// More state changes than this within `flap_window` is flapping.
    pub flap_changes: usize,
    pub flap_window: TimeDelta,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy {
            resolve_after: 2,
            flap_changes: 5,
            flap_window: TimeDelta::minutes(10),
        }
    }
}

/// What happened to a check's alert, in the order it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Transition {
    /// A new alert, firing.
    Opened {
        severity: Severity,
    },
    /// The open alert's severity changed (in place).
    Escalated {
        from: Severity,
        to: Severity,
    },
    Deescalated {
        from: Severity,
        to: Severity,
    },
    /// Back within thresholds long enough.
    Resolved,
    /// Changing state too often: one notification, then quiet.
    FlappingStarted {
        severity: Option<Severity>,
    },
    /// Stable again for the window; the alert resolved or fires at this severity.
    FlappingEnded {
        severity: Option<Severity>,
    },
}

impl Transition {
    /// Whether operators are told about it (severity lowered is only recorded).
    pub fn notifies(self) -> bool {
        !matches!(self, Transition::Deescalated { .. })
    }
}

/// The memory of one (tenant, check) between evaluations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracker {
    /// The open alert's severity, if one is open.
    pub open: Option<Severity>,
    /// Consecutive evaluations within thresholds while an alert is open.
    pub ok_streak: u32,
    /// The last known (not unknown) state.
    pub last: Option<CheckState>,
    /// When the state changed, within the flap window.
    changes: VecDeque<DateTime<Utc>>,
    pub flapping: bool,
}

impl Tracker {
    /// A tracker for an alert found open in the store (after a restart).
    pub fn reopened(severity: Severity, flapping: bool) -> Self {
        Tracker {
            open: Some(severity),
            last: Some(severity.state()),
            flapping,
            ..Tracker::default()
        }
    }

    /// The alert was resolved by hand: forget it; a breach that goes on
    /// opens a new one.
    pub fn resolved_by_hand(&mut self) {
        self.open = None;
        self.ok_streak = 0;
        self.flapping = false;
        self.changes.clear();
        self.last = None;
    }

    /// Feeds one evaluation of the check; returns what happened.
    pub fn observe(
        &mut self,
        state: CheckState,
        now: DateTime<Utc>,
        policy: &AlertPolicy,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let window_start = now - policy.flap_window;
        while self.changes.front().is_some_and(|at| *at < window_start) {
            self.changes.pop_front();
        }
        if state == CheckState::Unknown {
            return out;
        }
        if self.last.is_some_and(|last| last != state) {
            self.changes.push_back(now);
        }
        self.last = Some(state);
        let breach = state.severity();

        if self.flapping {
            if self.changes.is_empty() {
                // Stable for a whole window: out of flapping.
                self.flapping = false;
                self.ok_streak = 0;
                self.open = breach;
                out.push(Transition::FlappingEnded { severity: breach });
            }
            return out;
        }
        if self.changes.len() > policy.flap_changes {
            self.flapping = true;
            // The flap is one alert: open it if the check is breaching now
            // or was (an alert is open); it stays open while flapping.
            self.open = breach.or(self.open);
            self.ok_streak = 0;
            out.push(Transition::FlappingStarted {
                severity: self.open,
            });
            return out;
        }

        match (self.open, breach) {
            (None, Some(severity)) => {
                self.open = Some(severity);
                self.ok_streak = 0;
                out.push(Transition::Opened { severity });
            }
            (Some(from), Some(to)) => {
                self.ok_streak = 0;
                if from != to {
                    self.open = Some(to);
                    out.push(if to > from {
                        Transition::Escalated { from, to }
                    } else {
                        Transition::Deescalated { from, to }
                    });
                }
            }
            (Some(_), None) => {
                self.ok_streak += 1;
                if self.ok_streak >= policy.resolve_after.max(1) {
                    self.open = None;
                    self.ok_streak = 0;
                    out.push(Transition::Resolved);
                }
            }
            (None, None) => {}
        }
        out
    }
}

#[cfg(test)]
mod tests;
