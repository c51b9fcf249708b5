//! Waiting for a Deployment's rollout the way `kubectl rollout status`
//! judges it: the controller has seen the latest generation, every
//! desired replica is updated and available, no old replica is left, and
//! a `ProgressDeadlineExceeded` condition fails it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use serde_json::Value;

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    Complete,
    /// Still going: what it is waiting for.
    Progressing(String),
    /// It will not complete by itself.
    Failed(String),
}

/// Judges a Deployment as last read.
pub fn rollout_state(deployment: &Value) -> Rollout {
    let generation = deployment["metadata"]["generation"].as_i64().unwrap_or(0);
    let status = &deployment["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Rollout::Progressing(format!(
            "the controller has not seen generation {generation} yet (observed {observed})"
        ));
    }
    let deadline_exceeded = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded");
    if let Some(condition) = deadline_exceeded {
        let message = condition["message"].as_str().unwrap_or("no message");
        return Rollout::Failed(format!("progress deadline exceeded: {message}"));
    }
    let count = |field: &str| status[field].as_i64().unwrap_or(0);
    let desired = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let (replicas, updated, available) = (
        count("replicas"),
        count("updatedReplicas"),
        count("availableReplicas"),
    );
    if updated < desired {
        Rollout::Progressing(format!("{updated} of {desired} replicas updated"))
    } else if replicas > updated {
        Rollout::Progressing(format!(
            "{} old replicas pending termination",
            replicas - updated
        ))
    } else if available < desired {
        Rollout::Progressing(format!(
            "{available} of {desired} updated replicas available"
        ))
    } else {
        Rollout::Complete
    }
}

/// Why a rollout did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout of Deployment {name} failed: {reason}")]
    Failed { name: String, reason: String },
    #[error("rollout of Deployment {name} did not complete within {timeout:?}: {waiting_for}")]
    Timeout {
        name: String,
        timeout: Duration,
        waiting_for: String,
    },
    #[error("failed to watch Deployment {name}: {message}")]
    Watch { name: String, message: String },
}

/// Watches the Deployment `name` until its rollout completes or fails, or
/// `timeout` passes.
pub async fn wait(
    api: Api<DynamicObject>,
    name: &str,
    timeout: Duration,
) -> Result<(), RolloutError> {
    let last = Arc::new(Mutex::new(Rollout::Progressing(
        "the Deployment to be read".to_owned(),
    )));
    let seen = last.clone();
    let settled = move |object: Option<&DynamicObject>| {
        let state = match object {
            Some(object) => rollout_state(&serde_json::to_value(object).unwrap_or(Value::Null)),
            None => Rollout::Progressing("the Deployment to exist".to_owned()),
        };
        let done = !matches!(state, Rollout::Progressing(_));
        *seen.lock().unwrap_or_else(|e| e.into_inner()) = state;
        done
    };
    let watched = tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api, name, settled),
    )
    .await;
    let state = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match (watched, state) {
        (Err(_elapsed), Rollout::Progressing(waiting_for)) => Err(RolloutError::Timeout {
            name: name.to_owned(),
            timeout,
            waiting_for,
        }),
        (Ok(Err(err)), _) => Err(RolloutError::Watch {
            name: name.to_owned(),
            message: err.to_string(),
        }),
        (_, Rollout::Failed(reason)) => Err(RolloutError::Failed {
            name: name.to_owned(),
            reason,
        }),
        (_, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deployment(generation: i64, replicas: i64, status: Value) -> Value {
        json!({
            "metadata": {"name": "backend", "generation": generation},
            "spec": {"replicas": replicas},
            "status": status,
        })
    }

    #[test]
    fn complete_only_when_the_latest_generation_is_updated_and_available() {
        let done = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(
            rollout_state(&deployment(2, 3, done.clone())),
            Rollout::Complete
        );
        assert!(matches!(
            rollout_state(&deployment(3, 3, done)),
            Rollout::Progressing(m) if m.contains("generation 3")
        ));
        let old_left = json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3});
        assert!(matches!(
            rollout_state(&deployment(2, 3, old_left)),
            Rollout::Progressing(m) if m.contains("1 old replicas")
        ));
        let unavailable = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1});
        assert!(matches!(
            rollout_state(&deployment(2, 3, unavailable)),
            Rollout::Progressing(m) if m.contains("1 of 3")
        ));
        let not_updated = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3});
        assert!(matches!(
            rollout_state(&deployment(2, 3, not_updated)),
            Rollout::Progressing(m) if m.contains("2 of 3 replicas updated")
        ));
    }

    #[test]
    fn progress_deadline_exceeded_fails_and_zero_replicas_complete() {
        let stuck = json!({
            "observedGeneration": 1, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
            "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                            "message": "ReplicaSet \"backend-1\" has timed out progressing."}],
        });
        assert!(matches!(
            rollout_state(&deployment(1, 2, stuck)),
            Rollout::Failed(m) if m.contains("timed out progressing")
        ));
        assert_eq!(
            rollout_state(&deployment(4, 0, json!({"observedGeneration": 4}))),
            Rollout::Complete
        );
    }
}
