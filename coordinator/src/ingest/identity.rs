//! Who an agent is. Its client certificate's CN is either the name of its
//! node (certificates issued per node, `certs agent`), or, on Kubernetes
//! with the cert-manager csi-driver, `<pod>.<namespace>.pod`: the agent's
//! own pod, issued per pod, whose node the API server tells.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// The CN suffix of a pod identity.
pub const POD_SUFFIX: &str = ".pod";
/// The label every agent pod carries (the DaemonSet's selector).
pub const AGENT_LABEL: (&str, &str) = ("app.kubernetes.io/name", "knowton-agent");

/// Checks pod identities against the API server.
#[derive(Clone)]
pub struct PodIdentities {
    client: kube::Client,
    /// The namespace the agents run in; pods elsewhere are not agents.
    namespace: String,
}

impl std::fmt::Debug for PodIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodIdentities")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl PodIdentities {
    pub fn new(client: kube::Client, namespace: String) -> Self {
        PodIdentities { client, namespace }
    }

    /// Whether the pod named by `identity` is an agent running on `node`;
    /// the error says why not.
    pub async fn verify(&self, identity: &str, node: &str) -> Result<(), String> {
        let Some((pod, namespace)) = identity
            .strip_suffix(POD_SUFFIX)
            .and_then(|rest| rest.split_once('.'))
        else {
            return Err(format!(
                "{identity:?} is neither node {node:?} nor a pod identity"
            ));
        };
        if namespace != self.namespace {
            return Err(format!(
                "pod {namespace}/{pod} is not in the agents' namespace {}",
                self.namespace
            ));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let found = api
            .get_opt(pod)
            .await
            .map_err(|e| format!("cannot read pod {namespace}/{pod}: {e}"))?
            .ok_or_else(|| format!("pod {namespace}/{pod} does not exist"))?;
        let labelled = found
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(AGENT_LABEL.0))
            .is_some_and(|v| v == AGENT_LABEL.1);
        if !labelled {
            return Err(format!(
                "pod {namespace}/{pod} is not an agent (no {}={} label)",
                AGENT_LABEL.0, AGENT_LABEL.1
            ));
        }
        if found.metadata.deletion_timestamp.is_some() {
            return Err(format!("pod {namespace}/{pod} is being deleted"));
        }
        let on = found.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if on != Some(node) {
            return Err(format!(
                "pod {namespace}/{pod} runs on {}, not on {node:?}",
                on.map_or("no node".to_owned(), |n| format!("{n:?}"))
            ));
        }
        Ok(())
    }
}
