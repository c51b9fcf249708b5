//! Tenant namespaces: each tenant runs in a Kubernetes namespace of its
//! own, named by a prefix (`--namespace-prefix`) and its slug. The deployer
//! creates them, the agent probes only the pods in them, and the
//! coordinator accepts a pod's result only for the namespace of the tenant
//! it names: the one naming, here.

/// The label naming a pod's tenant (its slug), set on everything the
/// deployer renders.
pub const TENANT_LABEL: &str = "knowton.io/tenant";
/// The label naming a pod's part of a tenant (`backend`, `frontend`,
/// `volume`…).
pub const COMPONENT_LABEL: &str = "knowton.io/component";

/// The prefix of tenant namespaces unless configured otherwise.
pub const DEFAULT_NAMESPACE_PREFIX: &str = "knowton-tenant-";

/// Longest slug (see `tenant::validate_slug`), so that a prefix leaves room
/// for it in a 63-character namespace name.
const SLUG_ROOM: usize = 40;

/// The namespace of the tenant `slug`.
pub fn tenant_namespace(prefix: &str, slug: &str) -> String {
    format!("{prefix}{slug}")
}

/// The slug of the tenant whose namespace is `namespace`, if it is one.
pub fn tenant_of_namespace<'a>(prefix: &str, namespace: &'a str) -> Option<&'a str> {
    namespace
        .strip_prefix(prefix)
        .filter(|slug| !slug.is_empty())
}

/// Whether `prefix` can start a namespace name: lower-case letters, digits
/// and `-`, starting with a letter, leaving room for any slug.
pub fn is_namespace_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 63 - SLUG_ROOM
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_name_their_tenant_and_nothing_else() {
        let prefix = DEFAULT_NAMESPACE_PREFIX;
        assert_eq!(tenant_namespace(prefix, "acme"), "knowton-tenant-acme");
        assert_eq!(
            tenant_of_namespace(prefix, "knowton-tenant-acme"),
            Some("acme")
        );
        for other in [
            "knowton-tenant-",
            "default",
            "knowton-system",
            "x-knowton-tenant-acme",
        ] {
            assert_eq!(tenant_of_namespace(prefix, other), None, "{other}");
        }
        assert!(is_namespace_prefix(prefix));
        for bad in ["", "Knowton-", "1tenant-", "tenant_", &"a".repeat(24)] {
            assert!(!is_namespace_prefix(bad), "{bad:?}");
        }
    }
}
