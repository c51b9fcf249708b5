//! What the coordinator has told this agent (probe interval, slow
//! thresholds, check-alls), merged so that a later instruction never undoes
//! an earlier one it does not mention.

use std::collections::HashMap;
use std::time::Duration;

use knowton_proto::agent::v1::Instruction;

/// Every instruction received so far, merged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Instructed {
    /// The probe interval the coordinator imposes; `None`: `--interval`.
    pub interval: Option<Duration>,
    /// The coordinator's slow thresholds; `None`: `--slow-threshold`.
    pub slow: Option<SlowThresholds>,
    /// Check-alls asked for so far: each new one starts a round at once.
    pub check_alls: u64,
}

/// When an API health probe of a tenant's pod counts as slow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlowThresholds {
    /// For tenants not in `tenants`.
    pub default: Duration,
    pub tenants: HashMap<String, Duration>,
}

impl SlowThresholds {
    pub fn of(&self, tenant: &str) -> Duration {
        self.tenants.get(tenant).copied().unwrap_or(self.default)
    }
}

impl Instructed {
    /// Merges `instruction`: a zero field keeps what is in force.
    pub fn apply(&mut self, instruction: Instruction) {
        if instruction.probe_interval_ms != 0 {
            self.interval = Some(ms(instruction.probe_interval_ms));
        }
        if instruction.probe_now {
            self.check_alls += 1;
        }
        if instruction.slow_threshold_ms != 0 {
            self.slow = Some(SlowThresholds {
                default: ms(instruction.slow_threshold_ms),
                tenants: instruction
                    .tenant_slow_threshold_ms
                    .into_iter()
                    .filter(|(_, threshold)| *threshold != 0)
                    .map(|(tenant, threshold)| (tenant, ms(threshold)))
                    .collect(),
            });
        }
    }
}

fn ms(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_fields_keep_what_is_in_force() {
        let mut instructed = Instructed::default();
        instructed.apply(Instruction {
            probe_interval_ms: 2_000,
            slow_threshold_ms: 1_000,
            tenant_slow_threshold_ms: [("acme".to_owned(), 250)].into(),
            ..Instruction::default()
        });
        // A check-all changes neither the interval nor the thresholds.
        instructed.apply(Instruction {
            probe_now: true,
            ..Instruction::default()
        });
        assert_eq!(instructed.interval, Some(Duration::from_secs(2)));
        assert_eq!(instructed.check_alls, 1);
        let slow = instructed.slow.clone().unwrap();
        assert_eq!(slow.of("acme"), Duration::from_millis(250));
        assert_eq!(slow.of("globex"), Duration::from_secs(1));
        // New thresholds replace the old map.
        instructed.apply(Instruction {
            slow_threshold_ms: 800,
            ..Instruction::default()
        });
        let slow = instructed.slow.unwrap();
        assert_eq!(slow.of("acme"), Duration::from_millis(800));
    }
}
