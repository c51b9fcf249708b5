//! A tenant's volume in a cluster, for storage backups and restores: a
//! short-lived pod in the tenant's namespace mounts the claim (read-only
//! for a backup) and runs `knowton-agent volume`, which the coordinator
//! talks to through the API server's `pods/exec` ([`session`]).
//!
//! Why a pod and not the node agent: the agents have no hostPath (one on
//! the kubelet's pods directory would let every agent read every tenant's
//! files), and no new network path into a tenant's namespace is opened:
//! the pod has no service account token, is denied all network by the
//! tenant's policies, runs as the backend's user on a read-only root, and
//! ends by its deadline if the coordinator is gone. On a ReadWriteOnce
//! claim it is pinned to the node of the backend pod that holds it.
//!
//! Layout: [`pod`] renders the pod; [`session`] speaks the protocol;
//! [`restore`] writes a backup's files through it.

pub mod pod;
pub mod restore;
pub mod session;

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, AttachParams, DeleteParams, ListParams, PostParams};
use tokio::sync::Mutex;
use tokio_util::io::StreamReader;

use self::pod::{Access, CONTAINER, POD_NAME};
pub use self::session::{Caps, Session};
use knowton_common::namespace::COMPONENT_LABEL;
use knowton_common::volume::CLAIM;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("failed to {step} in {namespace}: {}", api_message(.source))]
    Api {
        step: &'static str,
        namespace: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("tenant namespace {namespace} has no claim {CLAIM}: nothing to back up or restore")]
    NoClaim { namespace: String },
    #[error("volume pod {pod} did not start within {seconds}s ({seen})")]
    NotStarted {
        pod: String,
        seconds: u64,
        seen: String,
    },
    #[error("volume pod {pod} refused: {problem}")]
    Refused { pod: String, problem: String },
    #[error("volume pod {pod}: {message}")]
    Failed { pod: String, message: String },
    #[error("volume pod {pod} {silent} for {seconds}s: given up")]
    Silent {
        pod: String,
        /// What it did not do: "sent no reply"…
        silent: &'static str,
        seconds: u64,
    },
    #[error("volume pod {pod}: the volume process ended early{}", if .stderr.is_empty() { String::new() } else { format!(" ({})", .stderr) })]
    Ended { pod: String, stderr: String },
}

fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

/// How volume pods are made.
#[derive(Debug, Clone)]
pub struct VolumeSettings {
    pub namespace_prefix: String,
    /// The agent's image (`knowton-agent volume`).
    pub image: String,
    /// How long a pod may live at most (its `activeDeadlineSeconds`).
    pub deadline: Duration,
    /// How long it may take to start.
    pub start_timeout: Duration,
    pub caps: Caps,
}

/// Opens tenants' volumes on the cluster.
#[derive(Clone)]
pub struct VolumePods {
    client: kube::Client,
    settings: VolumeSettings,
}

impl std::fmt::Debug for VolumePods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumePods")
            .field("settings", &self.settings)
            .finish()
    }
}

/// An open volume: its pod, running, and a session with it. [`Self::close`]
/// deletes the pod.
#[derive(Debug)]
pub struct VolumePod {
    api: Api<Pod>,
    namespace: String,
    session: Mutex<Session>,
}

impl VolumePods {
    pub fn new(client: kube::Client, settings: VolumeSettings) -> Self {
        VolumePods { client, settings }
    }

    /// Starts the volume pod of tenant `slug` (removing a leftover one
    /// first) and opens a session with it.
    pub async fn open(&self, slug: &str, access: Access) -> Result<VolumePod, VolumeError> {
        let namespace =
            knowton_common::namespace::tenant_namespace(&self.settings.namespace_prefix, slug);
        let api_err = |step| {
            let namespace = namespace.clone();
            move |source| VolumeError::Api {
                step,
                namespace,
                source: Box::new(source),
            }
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        let claim = claims
            .get_opt(CLAIM)
            .await
            .map_err(api_err("read the claim"))?
            .ok_or_else(|| VolumeError::NoClaim {
                namespace: namespace.clone(),
            })?;
        let shared = claim
            .spec
            .and_then(|s| s.access_modes)
            .is_some_and(|modes| modes.iter().any(|m| m == "ReadWriteMany"));
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let node = if shared {
            None
        } else {
            backend_node(&api)
                .await
                .map_err(api_err("list the backend's pods"))?
        };
        remove(&api)
            .await
            .map_err(api_err("remove a leftover volume pod"))?;
        let spec = pod::render(&pod::PodSpec {
            namespace: &namespace,
            slug,
            image: &self.settings.image,
            access,
            node: node.as_deref(),
            deadline: self.settings.deadline,
        });
        let spec: Pod = serde_json::from_value(spec).expect("a rendered pod is a Pod");
        api.create(&PostParams::default(), &spec)
            .await
            .map_err(api_err("create the volume pod"))?;
        let opened = self.start(&api, &namespace, access).await;
        match opened {
            Ok(session) => Ok(VolumePod {
                api,
                namespace,
                session: Mutex::new(session),
            }),
            Err(err) => {
                if let Err(undo) = remove(&api).await {
                    tracing::warn!(namespace, error = %undo, "failed to delete a volume pod that did not start");
                }
                Err(err)
            }
        }
    }

    /// Waits for the pod to run, then runs the volume process in it.
    async fn start(
        &self,
        api: &Api<Pod>,
        namespace: &str,
        access: Access,
    ) -> Result<Session, VolumeError> {
        let shown = format!("{namespace}/{POD_NAME}");
        let timeout = self.settings.start_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut poll = tokio::time::interval(Duration::from_millis(250));
        loop {
            poll.tick().await;
            let pod = api
                .get_opt(POD_NAME)
                .await
                .map_err(|source| VolumeError::Api {
                    step: "read the volume pod",
                    namespace: namespace.to_owned(),
                    source: Box::new(source),
                })?;
            let phase = pod
                .as_ref()
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".to_owned());
            match phase.as_str() {
                "Running" => break,
                "Pending" if tokio::time::Instant::now() < deadline => continue,
                seen => {
                    return Err(VolumeError::NotStarted {
                        pod: shown,
                        seconds: timeout.as_secs(),
                        seen: format!("phase {seen}"),
                    });
                }
            }
        }
        let params = AttachParams::default()
            .container(CONTAINER)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .max_stdin_buf_size(1 << 20)
            .max_stdout_buf_size(1 << 20);
        let mut process = api
            .exec(POD_NAME, pod::command(access), &params)
            .await
            .map_err(|source| VolumeError::Api {
                step: "exec into the volume pod",
                namespace: namespace.to_owned(),
                source: Box::new(source),
            })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (process.stdin(), process.stdout(), process.stderr())
        else {
            unreachable!("stdin, stdout and stderr were asked for");
        };
        let stderr = session::drain_stderr(stderr);
        // The process's task lives as long as its streams are used.
        tokio::spawn(async move {
            let _ = process.join().await;
        });
        Ok(Session::new(
            shown,
            stdin,
            stdout,
            stderr,
            self.settings.caps,
        ))
    }
}

impl VolumePod {
    pub fn session(&self) -> &Mutex<Session> {
        &self.session
    }

    /// The bytes of the regular file at `path`, at most `limit` of them.
    pub async fn read(
        &self,
        path: Vec<u8>,
        limit: u64,
    ) -> StreamReader<
        impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + '_,
        bytes::Bytes,
    > {
        let session = self.session.lock().await;
        StreamReader::new(Box::pin(session::read_stream(session, path, limit)))
    }

    /// Ends the session and deletes the pod.
    pub async fn close(self) {
        drop(self.session);
        if let Err(err) = remove(&self.api).await {
            tracing::warn!(namespace = %self.namespace, error = %err, "failed to delete the volume pod: its deadline ends it");
        }
    }
}

/// The node of the tenant's running backend pod, if it has one.
async fn backend_node(api: &Api<Pod>) -> Result<Option<String>, kube::Error> {
    let pods = api
        .list(&ListParams::default().labels(&format!("{COMPONENT_LABEL}=backend")))
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.spec?.node_name)
        .next())
}

/// Deletes the volume pod, if there is one, and waits until it is gone.
async fn remove(api: &Api<Pod>) -> Result<(), kube::Error> {
    match api
        .delete(POD_NAME, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(err) => return Err(err),
    }
    let mut poll = tokio::time::interval(Duration::from_millis(250));
    for _ in 0..240 {
        poll.tick().await;
        if api.get_opt(POD_NAME).await?.is_none() {
            return Ok(());
        }
    }
    Ok(())
}
