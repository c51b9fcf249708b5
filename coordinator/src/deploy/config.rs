//! `serve` flags of the deployer (each with an environment variable) and
//! their validation, including the image references every tenant runs.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::controller::DeploySettings;
use super::flags::ClusterArgs;
use super::scaling::ScalingSettings;

#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Kubeconfig of the tenants' cluster. Without it: the in-cluster
    /// service account, then $KUBECONFIG or ~/.kube/config; none of them:
    /// deployments are rendered and recorded as skipped.
    #[arg(long, env = "KNOWTON_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Never talk to a cluster, even when one is configured.
    #[arg(long, env = "KNOWTON_NO_CLUSTER", conflicts_with = "kubeconfig")]
    pub no_cluster: bool,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Seconds a rollout may take before the deployment fails.
    #[arg(long, env = "KNOWTON_ROLLOUT_TIMEOUT_SECONDS", default_value_t = 600)]
    pub rollout_timeout_seconds: u64,

    /// Seconds to wait for the agents to see a deployed tenant healthy.
    #[arg(long, env = "KNOWTON_VERIFY_TIMEOUT_SECONDS", default_value_t = 180)]
    pub verify_timeout_seconds: u64,

    /// Seconds between drift checks of every tenant (changes are also
    /// watched and repaired as they happen).
    #[arg(long, env = "KNOWTON_RECONCILE_SECONDS", default_value_t = 600)]
    pub reconcile_seconds: u64,

    /// Tenants deployed at the same time.
    #[arg(long, env = "KNOWTON_DEPLOY_CONCURRENCY", default_value_t = 4)]
    pub deploy_concurrency: usize,

    /// The coordinator's own namespace.
    #[arg(
        long = "coordinator-namespace",
        env = "POD_NAMESPACE",
        default_value = "knowton-system"
    )]
    pub namespace: String,

    /// Namespace the agents run in: an agent whose certificate names its
    /// pod (`<pod>.<namespace>.pod`, from the cert-manager csi-driver) is
    /// let in when that pod is an agent here on the node it names.
    /// Default: the coordinator's own.
    #[arg(long, env = "KNOWTON_AGENT_NAMESPACE")]
    pub agent_namespace: Option<String>,

    /// Seconds a tenant's response time must stay critical before its
    /// backend's minimum replicas is raised (0: never scale).
    #[arg(long, env = "KNOWTON_SCALE_AFTER_SECONDS", default_value_t = 300)]
    pub scale_after_seconds: u64,

    /// Seconds of fine response time before the minimum steps back down.
    #[arg(long, env = "KNOWTON_SCALE_CALM_SECONDS", default_value_t = 1800)]
    pub scale_calm_seconds: u64,

    /// Replicas added or removed per scaling step.
    #[arg(long, env = "KNOWTON_SCALE_STEP", default_value_t = 1)]
    pub scale_step: i32,

    /// Seconds between two looks at every tenant's response time.
    #[arg(long, env = "KNOWTON_SCALE_CHECK_SECONDS", default_value_t = 15)]
    pub scale_check_seconds: u64,

    /// The agent's image (with its tag), run in a tenant's namespace as a
    /// short-lived pod that mounts the tenant's volume for a storage
    /// backup or restore (`knowton-agent volume`).
    #[arg(
        long,
        env = "KNOWTON_VOLUME_IMAGE",
        default_value = "ghcr.io/knowton/knowton-agent:0.1.0"
    )]
    pub volume_image: String,

    /// Seconds a volume pod may live at most (its activeDeadlineSeconds):
    /// longer than the longest storage backup or restore.
    #[arg(
        long,
        env = "KNOWTON_VOLUME_DEADLINE_SECONDS",
        default_value_t = 43_200
    )]
    pub volume_deadline_seconds: u64,

    /// Seconds a volume pod may take to start (image pull, volume attach).
    #[arg(long, env = "KNOWTON_VOLUME_START_SECONDS", default_value_t = 300)]
    pub volume_start_seconds: u64,

    /// Seconds a volume pod may keep a backup or restore waiting for a
    /// frame, or for it to take one, before it is given up.
    #[arg(long, env = "KNOWTON_VOLUME_SILENCE_SECONDS", default_value_t = 120)]
    pub volume_silence_seconds: u64,
}

impl Default for KubeArgs {
    fn default() -> Self {
        KubeArgs {
            kubeconfig: None,
            no_cluster: true,
            cluster: ClusterArgs::default(),
            rollout_timeout_seconds: 600,
            verify_timeout_seconds: 180,
            reconcile_seconds: 600,
            deploy_concurrency: 4,
            namespace: "knowton-system".to_owned(),
            agent_namespace: None,
            scale_after_seconds: 300,
            scale_calm_seconds: 1800,
            scale_step: 1,
            scale_check_seconds: 15,
            volume_image: "ghcr.io/knowton/knowton-agent:0.1.0".to_owned(),
            volume_deadline_seconds: 43_200,
            volume_start_seconds: 300,
            volume_silence_seconds: 120,
        }
    }
}

/// Where the tenants' cluster is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSource {
    None,
    Infer,
    Kubeconfig(PathBuf),
}

#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub source: ClusterSource,
    pub settings: DeploySettings,
    /// `None`: no scaling.
    pub scaling: Option<ScalingSettings>,
    pub agent_namespace: String,
    pub volumes: VolumeFlags,
}

/// How tenants' volume pods are made (for storage backups and restores).
#[derive(Debug, Clone)]
pub struct VolumeFlags {
    pub image: String,
    pub deadline: Duration,
    pub start_timeout: Duration,
    pub silence: Duration,
}

impl KubeArgs {
    pub fn validate(&self, errors: &mut Vec<String>) -> DeployConfig {
        self.cluster.validate(errors);
        for (flag, value) in [
            ("--rollout-timeout-seconds", self.rollout_timeout_seconds),
            ("--verify-timeout-seconds", self.verify_timeout_seconds),
            ("--reconcile-seconds", self.reconcile_seconds),
            ("--volume-deadline-seconds", self.volume_deadline_seconds),
            ("--volume-start-seconds", self.volume_start_seconds),
            ("--volume-silence-seconds", self.volume_silence_seconds),
        ] {
            if value == 0 {
                errors.push(format!("{flag} must be at least 1"));
            }
        }
        if self.scale_check_seconds == 0 {
            errors.push("--scale-check-seconds must be at least 1".to_owned());
        }
        if self.scale_step < 1 {
            errors.push("--scale-step must be at least 1".to_owned());
        }
        if self.deploy_concurrency == 0 {
            errors.push("--deploy-concurrency must be at least 1".to_owned());
        }
        let source = match (&self.kubeconfig, self.no_cluster) {
            (_, true) => ClusterSource::None,
            (Some(path), false) => ClusterSource::Kubeconfig(path.clone()),
            (None, false) => ClusterSource::Infer,
        };
        let scaling = (self.scale_after_seconds > 0).then(|| ScalingSettings {
            after: Duration::from_secs(self.scale_after_seconds),
            calm: Duration::from_secs(self.scale_calm_seconds.max(1)),
            step: self.scale_step.max(1),
            every: Duration::from_secs(self.scale_check_seconds.max(1)),
        });
        if self.volume_image.trim().is_empty() || self.volume_image.contains(char::is_whitespace) {
            errors.push(format!(
                "--volume-image {:?} is not an image",
                self.volume_image
            ));
        }
        DeployConfig {
            volumes: VolumeFlags {
                image: self.volume_image.clone(),
                deadline: Duration::from_secs(self.volume_deadline_seconds.max(1)),
                start_timeout: Duration::from_secs(self.volume_start_seconds.max(1)),
                silence: Duration::from_secs(self.volume_silence_seconds.max(1)),
            },
            source,
            agent_namespace: self
                .agent_namespace
                .clone()
                .unwrap_or_else(|| self.namespace.clone()),
            scaling,
            settings: DeploySettings {
                cluster: self.cluster.settings(),
                rollout_timeout: Duration::from_secs(self.rollout_timeout_seconds.max(1)),
                verify_timeout: Duration::from_secs(self.verify_timeout_seconds.max(1)),
                reconcile_every: Duration::from_secs(self.reconcile_seconds.max(1)),
                concurrency: self.deploy_concurrency.max(1),
            },
        }
    }
}

/// `registry.example.com:5000/team/app` (no tag: the tag is separate):
/// lower-case path components of letters and digits joined by `.`, `_`,
/// `__` or `-`, an optional registry host (with a port) first.
pub fn is_image_name(name: &str) -> bool {
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && looks_like_host(parts[0]) {
        let host = parts.remove(0);
        let (domain, port) = host.split_once(':').unwrap_or((host, "0"));
        let domain_ok = domain.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if !domain_ok || port.parse::<u16>().is_err() {
            return false;
        }
    }
    !parts.is_empty() && parts.iter().all(|part| is_path_component(part))
}

fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn is_path_component(part: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if part.is_empty() || !part.starts_with(alnum) || !part.ends_with(alnum) {
        return false;
    }
    let mut separator = 0;
    for c in part.chars() {
        if alnum(c) {
            separator = 0;
        } else if matches!(c, '.' | '_' | '-') {
            separator += 1;
            // `__` and runs of `-` are allowed; `..` and `._` are not.
            if separator > 1 && !(c == '_' || c == '-') {
                return false;
            }
        } else {
            return false;
        }
    }
    true
}

/// An image tag: up to 128 of letters, digits, `_`, `.`, `-`, not
/// starting with `.` or `-`.
pub fn is_image_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_and_tags() {
        for good in [
            "ghcr.io/knowton/backend",
            "backend",
            "registry.example.com:5000/team/my_app",
            "localhost/app",
            "docker.io/library/nginx",
            "a/b__c/d-e--f",
        ] {
            assert!(is_image_name(good), "{good}");
        }
        for bad in [
            "",
            "Backend",
            "ghcr.io/knowton/backend:1.0",
            "ghcr.io//backend",
            "-app",
            "app-",
            "a..b",
            "host:notaport/app",
            "has space",
        ] {
            assert!(!is_image_name(bad), "{bad}");
        }
        for good in ["latest", "1.2.3", "v1_rc-2", "_x"] {
            assert!(is_image_tag(good), "{good}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a:b", &"x".repeat(129)] {
            assert!(!is_image_tag(bad), "{bad}");
        }
    }
}
