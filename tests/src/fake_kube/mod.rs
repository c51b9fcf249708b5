//! A FAKE Kubernetes API server, in process, for tests: no cluster can run
//! here, so the real `kube` client talks plain HTTP to this one instead. It
//! follows the real API's semantics and JSON shapes for what it serves,
//! simplified where the module docs say so.
//!
//! Layout:
//! - [`resources`]: the kinds served (core v1 pods, namespaces, quotas,
//!   limit ranges, config maps, secrets, services, claims; apps/v1
//!   deployments; networking ingresses and network policies; autoscaling/v2
//!   HPAs; policy/v1 PDBs; coordination leases).
//! - [`store`]: objects of any resource as JSON, keyed by (group/version/
//!   resource, namespace, name), under one cluster-wide resourceVersion,
//!   with a change log that watches and paged lists resume from until a
//!   test compacts it.
//! - [`selector`]: label and field selectors.
//! - `api`: the HTTP routes; `read`: list, watch, get; `write`: create,
//!   replace, patch, delete and dryRun; `object`: the metadata the server
//!   sets (uid, resourceVersion, generation, managedFields) and the status
//!   rules; `namespaces`: namespace lifecycle admission and cascading
//!   deletion; `validate`: the checks before a write; `patch`: merge, strategic merge and JSON patches; `apply`
//!   and `fields`: server-side apply and field ownership; `status`: errors
//!   as `Status` objects; `handles`: what a test reads and writes directly;
//!   `exec`: `pods/exec` over WebSocket running real local processes, and
//!   the kubelet's start of a pod that mounts a claim a test mapped.
//!
//! The main simplifications: lists are atomic for server-side apply and
//! strategic merge patches (the real server merges `containers` by name);
//! no discovery, no deletecollection, no subresource but `/status` (and a
//! pod's `/exec`); no
//! graceful deletion or finalizers except a Namespace's own; no garbage
//! collection of owned objects; nothing validates specs but names and a
//! claim's (immutable but for a growing storage request).
//!
//! ```no_run
//! # async fn example() {
//! use knowton_tests::fake_kube::{FakeKube, TestPod};
//! let fake = FakeKube::start().await;
//! fake.put_pod(TestPod::new("knowton-tenant-acme", "acme-0").tenant("acme").on("node-a").running("10.0.0.7").json());
//! // Point a kube client at fake.url() (or a kubeconfig from fake.kubeconfig()).
//! # }
//! ```

mod api;
mod apply;
mod exec;
mod fields;
mod handles;
mod namespaces;
mod object;
mod patch;
mod pod;
mod read;
pub mod resources;
pub mod selector;
mod status;
pub mod store;
#[cfg(test)]
mod tests;
mod validate;
mod write;

pub use exec::Backing;
pub use pod::TestPod;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use resources::{NAMESPACES, PODS, ResourceType};
use store::Store;

/// The manager of the tests' own writes.
const TEST_MANAGER: &str = "test";

/// State shared by the routes and the test's handle.
#[derive(Debug)]
struct Shared {
    store: Mutex<Store>,
    summaries: Mutex<HashMap<String, Value>>,
    requests: Mutex<Vec<String>>,
    /// Failures to answer, in the order `fail_next` asked for them.
    failures: Mutex<Vec<Failure>>,
    /// Bumped to end every open watch.
    closing: watch::Sender<u64>,
    down: AtomicBool,
    /// While true, list requests wait.
    holding_lists: watch::Sender<bool>,
    open_watches: AtomicUsize,
    /// 410 Expired answers given (lists and watches).
    expired_answers: AtomicUsize,
    bookmark_every: Duration,
    /// Claims mapped to local directories, and the programs exec runs.
    mounts: Mutex<exec::Mounts>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats_summary(&self, node: &str) -> Option<Value> {
        lock(&self.summaries).get(node).cloned()
    }

    fn log_request(&self, method: &str, uri: &axum::http::Uri) {
        lock(&self.requests).push(format!("{method} {uri}"));
    }

    /// The status code of the failure to answer `method path` with, if
    /// a test asked for one.
    fn take_failure(&self, method: &str, path: &str) -> Option<u16> {
        let mut failures = lock(&self.failures);
        let at = failures.iter().position(|f| {
            f.method.eq_ignore_ascii_case(method) && path.contains(&f.path_contains)
        })?;
        let failure = &mut failures[at];
        let code = failure.code;
        failure.times -= 1;
        if failure.times == 0 {
            failures.remove(at);
        }
        Some(code)
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    async fn lists_released(&self) {
        let mut holding = self.holding_lists.subscribe();
        let _ = holding.wait_for(|held| !held).await;
    }

    fn watch_opened(&self) {
        self.open_watches.fetch_add(1, Ordering::SeqCst);
    }

    fn watch_closed(&self) {
        self.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Requests to fail (see [`FakeKube::fail_next`]).
#[derive(Debug)]
struct Failure {
    method: String,
    path_contains: String,
    code: u16,
    times: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running fake API server on a loopback port; stops when dropped.
///
/// Besides the API, a test reads and writes objects directly: by
/// apiVersion and kind with [`FakeKube::object`], [`FakeKube::objects`],
/// [`FakeKube::put_object`], [`FakeKube::edit`] (a hand edit),
/// [`FakeKube::delete_object`] and [`FakeKube::set_status`]; by
/// [`ResourceType`] with [`FakeKube::put`], [`FakeKube::get`] and
/// [`FakeKube::delete`]. It injects failures with [`FakeKube::fail_next`],
/// slows lists with [`FakeKube::hold_lists`], keeps deleted namespaces
/// Terminating with [`FakeKube::hold_namespace_deletion`], and counts
/// requests with [`FakeKube::requests`].
#[derive(Debug)]
pub struct FakeKube {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<Server>>,
}

#[derive(Debug)]
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl FakeKube {
    /// Starts on 127.0.0.1 on a free port, sending watch bookmarks every
    /// second to the watches that allow them.
    pub async fn start() -> FakeKube {
        FakeKube::start_with_bookmarks_every(Duration::from_secs(1)).await
    }

    pub async fn start_with_bookmarks_every(bookmark_every: Duration) -> FakeKube {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            summaries: Mutex::default(),
            requests: Mutex::default(),
            failures: Mutex::default(),
            closing: watch::channel(0).0,
            down: AtomicBool::new(false),
            holding_lists: watch::channel(false).0,
            open_watches: AtomicUsize::new(0),
            expired_answers: AtomicUsize::new(0),
            bookmark_every,
            mounts: Mutex::default(),
        });
        let listener = bind("127.0.0.1:0".parse().expect("an address"));
        let addr = listener.local_addr().expect("a bound address");
        let fake = FakeKube {
            addr,
            shared,
            server: Mutex::new(None),
        };
        fake.serve(listener);
        fake
    }

    fn serve(&self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = api::router(self.shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        *lock(&self.server) = Some(Server { stop, task });
    }

    /// The API server's URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for this server, without credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: fake\n  user: {{}}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\n",
            self.url()
        )
    }

    /// Creates or replaces an object as given (status included), as
    /// manager "test"; the stored object (with its resourceVersion, uid,
    /// creationTimestamp, generation and managedFields).
    pub fn put(&self, ty: &'static ResourceType, object: Value) -> Value {
        write::put_for_test(&mut self.shared.store(), ty, object, TEST_MANAGER)
    }

    /// Deletes an object at once (a Namespace with everything in it); its
    /// last state, if it existed.
    pub fn delete(&self, ty: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        let mut store = self.shared.store();
        if *ty == NAMESPACES {
            return namespaces::delete_for_test(&mut store, name);
        }
        store.delete(ty, &(namespace.to_owned(), name.to_owned()))
    }

    /// An object (the namespace is "" for cluster-scoped ones).
    pub fn get(&self, ty: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .get(ty, &(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Creates or replaces a pod (see [`TestPod`]).
    pub fn put_pod(&self, pod: Value) -> Value {
        self.put(&PODS, pod)
    }

    /// Deletes a pod at once (as with a zero grace period).
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.delete(&PODS, namespace, name)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get(&PODS, namespace, name)
    }

    /// Maps the claim `claim` in `namespace` to `backing`: a pod created
    /// through the API that mounts it is scheduled and Running at once,
    /// and an exec in it sees the claim's mount path as the directory (or
    /// gets the hostile bytes).
    pub fn mount_claim(&self, namespace: &str, claim: &str, backing: Backing) {
        lock(&self.shared.mounts)
            .claims
            .insert((namespace.to_owned(), claim.to_owned()), backing);
    }

    /// The pods started because they mount a mapped claim, in order, as
    /// they were when they started.
    pub fn started_pods(&self) -> Vec<Value> {
        lock(&self.shared.mounts).started.clone()
    }

    /// An exec of `name` runs the local `binary`.
    pub fn provide_command(&self, name: &str, binary: std::path::PathBuf) {
        lock(&self.shared.mounts)
            .commands
            .insert(name.to_owned(), binary);
    }

    /// The cluster's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Forgets the change history: a watch or paged list from an older
    /// resourceVersion now gets 410 Expired.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// What `GET /api/v1/nodes/{node}/proxy/stats/summary` answers (404
    /// until set).
    pub fn set_stats_summary(&self, node: &str, summary: Value) {
        lock(&self.shared.summaries).insert(node.to_owned(), summary);
    }

    pub fn remove_stats_summary(&self, node: &str) {
        lock(&self.shared.summaries).remove(node);
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.requests).clone()
    }

    /// Requests so far whose path (without the query) is `path`.
    pub fn requests_to(&self, path: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| {
                r.split_once(' ')
                    .is_some_and(|(_, target)| target.split('?').next() == Some(path))
            })
            .count()
    }

    /// Makes list requests wait until [`FakeKube::release_lists`], as a
    /// slow API server would (to see a client before its first list).
    pub fn hold_lists(&self) {
        self.shared.holding_lists.send_replace(true);
    }

    pub fn release_lists(&self) {
        self.shared.holding_lists.send_replace(false);
    }

    /// 410 Expired answers given so far, to lists and watches.
    pub fn expired_answers(&self) -> usize {
        self.shared.expired_answers.load(Ordering::SeqCst)
    }

    /// Watches streaming now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Ends every open watch, as an API server restart would; clients
    /// watch again from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.closing.send_modify(|n| *n += 1);
    }

    /// Stops serving: open watches end, connections close, and new ones are
    /// refused until [`FakeKube::up`]. The objects are kept.
    pub async fn down(&self) {
        self.shared.down.store(true, Ordering::SeqCst);
        self.close_watches();
        let server = lock(&self.server).take();
        if let Some(Server { stop, mut task }) = server {
            let _ = stop.send(());
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Serves again on the same address.
    pub async fn up(&self) {
        if lock(&self.server).is_some() {
            return;
        }
        self.shared.down.store(false, Ordering::SeqCst);
        self.serve(bind(self.addr));
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.close_watches();
        if let Some(server) = lock(&self.server).take() {
            server.task.abort();
        }
    }
}

/// Binds with `SO_REUSEADDR`, so that the server can come back on its
/// address while old connections linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("create a socket");
    socket.set_reuseaddr(true).expect("set SO_REUSEADDR");
    socket
        .bind(addr)
        .unwrap_or_else(|err| panic!("bind the fake API server on {addr}: {err}"));
    socket.listen(128).expect("listen")
}
