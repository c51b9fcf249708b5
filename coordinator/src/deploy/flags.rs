//! The cluster flags that `serve` and `deploy` share (each with an
//! environment variable), their validation, and the CIDR check the
//! ingress allowlist and the database addresses use.

use clap::Args;

use super::render::{ClusterSettings, IngressStyle};
use super::volume::AccessMode;

/// Cluster settings, each with an environment variable.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    #[arg(
        long,
        env = "KNOWTON_NAMESPACE_PREFIX",
        default_value = knowton_common::namespace::DEFAULT_NAMESPACE_PREFIX
    )]
    pub namespace_prefix: String,
    #[arg(
        long,
        env = "KNOWTON_BACKEND_IMAGE",
        default_value = "ghcr.io/knowton/backend"
    )]
    pub backend_image: String,
    #[arg(
        long,
        env = "KNOWTON_FRONTEND_IMAGE",
        default_value = "ghcr.io/knowton/frontend"
    )]
    pub frontend_image: String,
    #[arg(long, env = "KNOWTON_IMAGE_TAG", default_value = "latest")]
    pub image_tag: String,
    #[arg(long, env = "KNOWTON_INGRESS_CLASS", default_value = "nginx")]
    pub ingress_class: String,
    /// Whose annotations carry the plan's rate limit and the allowlist.
    #[arg(
        long,
        env = "KNOWTON_INGRESS_STYLE",
        value_enum,
        default_value = "nginx"
    )]
    pub ingress_style: IngressStyle,
    #[arg(
        long,
        env = "KNOWTON_CLUSTER_ISSUER",
        default_value = "letsencrypt-prod"
    )]
    pub cluster_issuer: String,
    /// Where the tenants' databases are (CIDR, repeatable or
    /// comma-separated): the only addresses outside its namespace, besides
    /// DNS, a tenant's pods may reach. None by default: set it.
    #[arg(
        long = "tenant-database-cidr",
        env = "KNOWTON_TENANT_DATABASE_CIDRS",
        value_delimiter = ','
    )]
    pub tenant_database_cidrs: Vec<String>,
    /// The port tenants' pods reach their database server at (their
    /// ConfigMap's DATABASE_PORT, and the port their egress allows).
    /// Default: the port of --tenant-database-url, else 5432.
    #[arg(long, env = "KNOWTON_TENANT_DATABASE_PORT")]
    pub tenant_database_port: Option<u16>,
    /// The host tenants' pods reach their database server at (their
    /// ConfigMap's DATABASE_HOST), when it is not the host of
    /// --tenant-database-url (the coordinator may reach it by another name
    /// than pods do). Without a tenants' database server, tenants get no
    /// DATABASE_* settings.
    #[arg(long, env = "KNOWTON_TENANT_DATABASE_HOST")]
    pub tenant_database_host: Option<String>,
    /// The storage class of each tenant's volume (a PersistentVolumeClaim
    /// as big as its plan's storage, mounted at /data in the backend).
    /// Default: the cluster's default class.
    #[arg(long, env = "KNOWTON_TENANT_STORAGE_CLASS")]
    pub tenant_storage_class: Option<String>,
    /// How tenants' volumes are mounted. read-write-once (any storage
    /// class): the backend runs one replica, replaced on each rollout.
    /// read-write-many (a class that supports it): the backend scales
    /// within its plan's replicas and rolls.
    #[arg(
        long,
        env = "KNOWTON_TENANT_STORAGE_ACCESS_MODE",
        value_enum,
        default_value = "read-write-once"
    )]
    pub tenant_storage_access_mode: AccessMode,
    /// The coordinator's service account, NAMESPACE/NAME: each tenant
    /// namespace binds it the ClusterRole knowton-tenant-manager (its
    /// rights on the tenant's Secrets).
    #[arg(
        long,
        env = "KNOWTON_SERVICE_ACCOUNT",
        default_value = "knowton-system/knowton-coordinator"
    )]
    pub service_account: String,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        let defaults = ClusterSettings::default();
        ClusterArgs {
            namespace_prefix: defaults.namespace_prefix,
            backend_image: defaults.backend_image,
            frontend_image: defaults.frontend_image,
            image_tag: defaults.image_tag,
            ingress_class: defaults.ingress_class,
            ingress_style: defaults.ingress_style,
            cluster_issuer: defaults.cluster_issuer,
            tenant_database_cidrs: defaults.database_cidrs,
            tenant_database_port: None,
            tenant_database_host: None,
            tenant_storage_class: None,
            tenant_storage_access_mode: defaults.storage_access,
            service_account: format!(
                "{}/{}",
                defaults.service_account.0, defaults.service_account.1
            ),
        }
    }
}

impl ClusterArgs {
    /// Adds what is wrong with these settings to `errors`.
    pub fn validate(&self, errors: &mut Vec<String>) {
        for (flag, image) in [
            ("--backend-image", &self.backend_image),
            ("--frontend-image", &self.frontend_image),
        ] {
            if !super::config::is_image_name(image) {
                errors.push(format!(
                    "{flag} {image:?} is not an image name (e.g. ghcr.io/knowton/backend, without a tag)"
                ));
            }
        }
        if !super::config::is_image_tag(&self.image_tag) {
            errors.push(format!(
                "--image-tag {:?} is not an image tag (letters, digits, '_', '.', '-'; at most 128)",
                self.image_tag
            ));
        }
        let prefix_ok = knowton_common::namespace::is_namespace_prefix(&self.namespace_prefix);
        if !prefix_ok {
            errors.push(format!(
                "--namespace-prefix {:?} must be lower-case letters, digits and '-', start with a letter and leave room for a 40-character slug (at most 23 characters)",
                self.namespace_prefix
            ));
        }
        for cidr in &self.tenant_database_cidrs {
            if let Err(problem) = database_cidr(cidr) {
                errors.push(format!("--tenant-database-cidr {cidr:?} {problem}"));
            }
        }
        if self.tenant_database_port == Some(0) {
            errors.push("--tenant-database-port must be a port (1 to 65535)".to_owned());
        }
        if let Some(host) = &self.tenant_database_host
            && !is_host(host)
        {
            errors.push(format!(
                "--tenant-database-host {host:?} is not a host name or IP address"
            ));
        }
        if let Some(class) = &self.tenant_storage_class
            && !is_subdomain(class)
        {
            errors.push(format!(
                "--tenant-storage-class {class:?} is not a storage class name (lower-case letters, digits, '-' and '.')"
            ));
        }
        if service_account(&self.service_account).is_none() {
            errors.push(format!(
                "--service-account {:?} must be NAMESPACE/NAME (e.g. knowton-system/knowton-coordinator)",
                self.service_account
            ));
        }
    }

    pub fn settings(&self) -> ClusterSettings {
        ClusterSettings {
            namespace_prefix: self.namespace_prefix.clone(),
            backend_image: self.backend_image.clone(),
            frontend_image: self.frontend_image.clone(),
            image_tag: self.image_tag.clone(),
            ingress_class: self.ingress_class.clone(),
            ingress_style: self.ingress_style,
            cluster_issuer: self.cluster_issuer.clone(),
            database_cidrs: self.tenant_database_cidrs.clone(),
            database_port: self.tenant_database_port.unwrap_or(5432),
            // `serve` defaults it to the host of --tenant-database-url.
            database_host: self.tenant_database_host.clone(),
            storage_class: self.tenant_storage_class.clone(),
            storage_access: self.tenant_storage_access_mode,
            service_account: service_account(&self.service_account)
                .unwrap_or_else(|| ClusterSettings::default().service_account),
            ..ClusterSettings::default()
        }
    }
}

/// An RFC 1123 subdomain, as Kubernetes object names are.
fn is_subdomain(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.starts_with(alnum)
                && label.ends_with(alnum)
                && label.chars().all(|c| alnum(c) || c == '-')
        })
}

/// A DNS name or an IP address, as a pod's resolver takes it.
fn is_host(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || (host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

/// `NAMESPACE/NAME` of a service account, both DNS labels.
fn service_account(text: &str) -> Option<(String, String)> {
    let (namespace, name) = text.split_once('/')?;
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    (label(namespace) && label(name)).then(|| (namespace.to_owned(), name.to_owned()))
}

/// A database's addresses: a CIDR no wider than a /16 (IPv4) or a /48
/// (IPv6), so that "the tenants' databases" cannot quietly become a whole
/// private network.
fn database_cidr(cidr: &str) -> Result<(), &'static str> {
    if !is_cidr(cidr) {
        return Err("is not a CIDR (e.g. 10.20.30.0/24)");
    }
    let (addr, prefix) = cidr.split_once('/').unwrap_or_default();
    let prefix: u8 = prefix.parse().unwrap_or(0);
    let narrow = match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix >= 16,
        _ => prefix >= 48,
    };
    if narrow {
        Ok(())
    } else {
        Err("is wider than a database's addresses (at most a /16, or a /48 for IPv6)")
    }
}

/// `203.0.113.0/24` or `2001:db8::/32`.
pub fn is_cidr(text: &str) -> bool {
    let Some((addr, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{ClusterArgs, database_cidr, is_cidr};

    #[test]
    fn tenant_database_addresses_are_narrow_and_there_is_no_default() {
        assert!(ClusterArgs::default().tenant_database_cidrs.is_empty());
        for good in ["10.20.30.40/32", "10.20.0.0/16", "2001:db8:1::/48"] {
            assert_eq!(database_cidr(good), Ok(()), "{good}");
        }
        for bad in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "172.16.0.0/12",
            "::/0",
            "db.internal",
        ] {
            assert!(database_cidr(bad).is_err(), "{bad}");
        }
        let mut args = ClusterArgs {
            tenant_database_cidrs: vec!["10.0.0.0/8".to_owned()],
            service_account: "knowton-coordinator".to_owned(),
            ..ClusterArgs::default()
        };
        let mut errors = Vec::new();
        args.validate(&mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("--tenant-database-cidr \"10.0.0.0/8\""));
        args.tenant_database_cidrs = vec!["10.20.30.40/32".to_owned()];
        args.service_account = "ops/kt".to_owned();
        errors.clear();
        args.validate(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let settings = args.settings();
        assert_eq!(settings.database_cidrs, ["10.20.30.40/32"]);
        assert_eq!(
            settings.service_account,
            ("ops".to_owned(), "kt".to_owned())
        );
    }

    #[test]
    fn storage_class_and_database_host_are_names() {
        let args = ClusterArgs {
            tenant_storage_class: Some("Fast SSD".to_owned()),
            tenant_database_host: Some("db_1.internal".to_owned()),
            tenant_database_port: Some(0),
            ..ClusterArgs::default()
        };
        let mut errors = Vec::new();
        args.validate(&mut errors);
        assert_eq!(errors.len(), 3, "{errors:?}");
        let args = ClusterArgs {
            tenant_storage_class: Some("fast-ssd.example.com".to_owned()),
            tenant_database_host: Some("2001:db8::7".to_owned()),
            ..ClusterArgs::default()
        };
        errors.clear();
        args.validate(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let settings = args.settings();
        assert_eq!(
            settings.storage_class.as_deref(),
            Some("fast-ssd.example.com")
        );
        assert_eq!(settings.database_host.as_deref(), Some("2001:db8::7"));
        assert_eq!(settings.database_port, 5432);
    }

    #[test]
    fn cidrs() {
        for good in [
            "203.0.113.0/24",
            "10.0.0.1/32",
            "2001:db8::/32",
            "0.0.0.0/0",
        ] {
            assert!(is_cidr(good), "{good}");
        }
        for bad in [
            "203.0.113.0",
            "203.0.113.0/33",
            "example.com/24",
            "10.0.0/8",
            "/8",
            "::/129",
        ] {
            assert!(!is_cidr(bad), "{bad}");
        }
    }
}
