//! What a test reads and writes directly, by apiVersion and kind, as the
//! actors a test plays: itself (manager "test"), a person editing by hand
//! (manager "kubectl-edit"), a controller writing status; and the
//! failures and delays it injects.

use serde_json::Value;

use super::object::Via;
use super::resources::{NAMESPACES, ResourceType};
use super::{Failure, FakeKube, TEST_MANAGER, lock, namespaces, write};

/// The manager of [`FakeKube::edit`], as `kubectl edit` names itself.
const EDIT_MANAGER: &str = "kubectl-edit";

/// The served resource of `api_version` and `kind`; a test asking for
/// another is a mistake in the test.
fn resource(api_version: &str, kind: &str) -> &'static ResourceType {
    ResourceType::find(api_version, kind)
        .unwrap_or_else(|| panic!("the fake API server does not serve {api_version} {kind}"))
}

/// The store key: cluster-scoped objects have the namespace "".
fn key(ty: &ResourceType, namespace: Option<&str>, name: &str) -> (String, String) {
    let namespace = if ty.namespaced {
        namespace.unwrap_or("default")
    } else {
        ""
    };
    (namespace.to_owned(), name.to_owned())
}

impl FakeKube {
    /// The stored object, if any (`namespace` is ignored for
    /// cluster-scoped kinds).
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let ty = resource(api_version, kind);
        self.shared
            .store()
            .get(ty, &key(ty, namespace, name))
            .cloned()
    }

    /// The stored objects of a kind, in `namespace` or (None) in all, in
    /// (namespace, name) order.
    pub fn objects(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let ty = resource(api_version, kind);
        let namespace = namespace.filter(|_| ty.namespaced);
        let store = self.shared.store();
        store
            .list_at(ty, namespace, None, store.resource_version())
            .unwrap_or_default()
            .into_values()
            .collect()
    }

    /// Creates or replaces an object as given (status included; the kind
    /// from its apiVersion and kind, namespaced ones in `default` unless
    /// it says), as manager "test", without admission checks; a watch
    /// event each time. The stored object.
    pub fn put_object(&self, object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or("");
        let kind = object["kind"].as_str().unwrap_or("");
        let ty = resource(api_version, kind);
        write::put_for_test(&mut self.shared.store(), ty, object, TEST_MANAGER)
    }

    /// Edits an object by hand, as `kubectl edit` would: an Update by
    /// manager "kubectl-edit" (which takes over the fields it changes;
    /// the generation goes up if anything outside metadata and status
    /// changes; a status change is ignored for kinds with a status
    /// subresource). The object after. Panics if there is no such object.
    pub fn edit(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Value {
        let ty = resource(api_version, kind);
        let key = key(ty, namespace, name);
        write::update_for_test(
            &mut self.shared.store(),
            ty,
            key,
            Via::Main,
            EDIT_MANAGER,
            f,
        )
        .unwrap_or_else(|| panic!("no {kind} {namespace:?}/{name} to edit"))
    }

    /// Deletes an object at once; a Namespace as through the API (see
    /// [`FakeKube::hold_namespace_deletion`]). Its last state, if it
    /// existed.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let ty = resource(api_version, kind);
        let mut store = self.shared.store();
        if *ty == NAMESPACES {
            return namespaces::delete_for_test(&mut store, name);
        }
        store.delete(ty, &key(ty, namespace, name))
    }

    /// Writes an object's status through its `/status` subresource, as
    /// its controller would (manager "test"): a MODIFIED event, unless
    /// the status was already that. `namespace` is "" for cluster-scoped
    /// kinds. Panics if there is no such object.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) {
        let ty = resource(api_version, kind);
        let key = key(ty, Some(namespace), name);
        let change = |object: &mut Value| object["status"] = status;
        write::update_for_test(
            &mut self.shared.store(),
            ty,
            key,
            Via::Status,
            TEST_MANAGER,
            change,
        )
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} to set the status of"));
    }

    /// Answers the next `times` requests whose method is `method` and
    /// whose path contains `path_contains` with a `code` error, as the
    /// real API server words it (409 Conflict: the object was modified;
    /// 422 Invalid, with details; 500 InternalError; 404 NotFound; other
    /// codes with their generic reason), and does nothing else for them.
    /// Requests still show in [`FakeKube::requests`].
    pub fn fail_next(&self, method: &str, path_contains: &str, code: u16, times: usize) {
        if times == 0 {
            return;
        }
        lock(&self.shared.failures).push(Failure {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            code,
            times,
        });
    }

    /// [`Self::fail_next`] for every such request until
    /// [`Self::stop_failing`]: however many attempts a test's action
    /// leads to, each fails the same way.
    pub fn fail_every(&self, method: &str, path_contains: &str, code: u16) {
        self.fail_next(method, path_contains, code, usize::MAX);
    }

    /// Forgets the failures asked for `method` and `path_contains`.
    pub fn stop_failing(&self, method: &str, path_contains: &str) {
        lock(&self.shared.failures)
            .retain(|f| !(f.method == method && f.path_contains == path_contains));
    }

    /// While held, a deleted Namespace stays Terminating (no new content
    /// admitted, its objects still there); releasing finishes every
    /// pending deletion at once.
    pub fn hold_namespace_deletion(&self, hold: bool) {
        let mut store = self.shared.store();
        store.hold_namespace_deletion = hold;
        if !hold {
            namespaces::finish_all(&mut store);
        }
    }
}
