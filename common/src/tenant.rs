//! Tenant status, branding and the validation of every operator-supplied field.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A field that failed validation, named by its path in the request
/// (`slug`, `branding.primaryColor`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Lifecycle state of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Deprovisioned,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Deprovisioned => "deprovisioned",
        }
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(TenantStatus::Active),
            "deprovisioned" => Ok(TenantStatus::Deprovisioned),
            other => Err(ValidationError::new(
                "status",
                format!("unknown status {other:?}: expected active or deprovisioned"),
            )),
        }
    }
}

/// White-label branding of a tenant instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Branding {
    pub company_name: String,
    /// `#RRGGBB`
    pub primary_color: String,
    /// `#RRGGBB`
    pub secondary_color: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
}

impl Branding {
    pub const DEFAULT_PRIMARY: &'static str = "#1E40AF";
    pub const DEFAULT_SECONDARY: &'static str = "#3B82F6";

    /// The branding a tenant gets when the request gives none.
    pub fn default_for(company_name: &str) -> Self {
        Branding {
            company_name: company_name.to_owned(),
            primary_color: Self::DEFAULT_PRIMARY.to_owned(),
            secondary_color: Self::DEFAULT_SECONDARY.to_owned(),
            logo_url: None,
        }
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("branding.companyName", &self.company_name)?;
        validate_color("branding.primaryColor", &self.primary_color)?;
        validate_color("branding.secondaryColor", &self.secondary_color)?;
        if let Some(url) = &self.logo_url {
            validate_https_url("branding.logoUrl", url)?;
        }
        Ok(())
    }
}

/// Slugs that would collide with platform names, hostnames or namespaces.
pub const RESERVED_SLUGS: &[&str] = &[
    "admin",
    "administrator",
    "api",
    "app",
    "apps",
    "auth",
    "cdn",
    "dashboard",
    "default",
    "dev",
    "docs",
    "ftp",
    "grafana",
    "help",
    "internal",
    "knowton",
    "kube",
    "localhost",
    "login",
    "mail",
    "metrics",
    "monitoring",
    "prometheus",
    "root",
    "smtp",
    "staging",
    "static",
    "status",
    "support",
    "system",
    "test",
    "www",
];

/// A slug is a DNS-1123 label of 3 to 40 characters that is not reserved:
/// it names the tenant's namespace and appears in hostnames.
pub fn validate_slug(slug: &str) -> Result<(), ValidationError> {
    let err = |msg: &str| Err(ValidationError::new("slug", msg));
    if slug.len() < 3 || slug.len() > 40 {
        return err("must be 3 to 40 characters long");
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err("may contain only lowercase letters, digits and '-'");
    }
    if slug.starts_with('-') || slug.ends_with('-') {
        return err("must start and end with a letter or digit");
    }
    if looks_like_uuid(slug) {
        return err("must not look like a tenant id (a UUID): paths take either");
    }
    if RESERVED_SLUGS.contains(&slug) || slug.starts_with("kube-") || slug.starts_with("knowton-") {
        return err("is reserved");
    }
    Ok(())
}

/// Whether `slug` could be read as a UUID in any of its forms: 32 hex
/// digits, with or without hyphens anywhere. A superset of what UUID
/// parsers accept, so no parser's leniency lets one through.
fn looks_like_uuid(slug: &str) -> bool {
    slug.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && slug.bytes().filter(u8::is_ascii_hexdigit).count() == 32
}

/// A fully qualified hostname (RFC 1123), at least two labels, no trailing dot.
/// Returns the lower-cased form that is stored.
pub fn normalize_domain(field: &str, domain: &str) -> Result<String, ValidationError> {
    let err = |msg: &str| Err(ValidationError::new(field, msg));
    if domain.is_empty() || domain.len() > 253 {
        return err("must be a hostname of 1 to 253 characters");
    }
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return err("must be a fully qualified hostname such as acme.example.com");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return err("each label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return err("may contain only letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return err("labels must start and end with a letter or digit");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return err("must be a hostname, not an IP address");
    }
    Ok(domain)
}

/// A pragmatic e-mail address check: `local@host` with a dot-atom local part
/// and a valid hostname. Returns the address with its domain lower-cased.
pub fn normalize_email(field: &str, email: &str) -> Result<String, ValidationError> {
    let err = |msg: &str| Err(ValidationError::new(field, msg));
    if email.len() > 254 {
        return err("must be at most 254 characters");
    }
    let Some((local, host)) = email.rsplit_once('@') else {
        return err("must be an e-mail address such as admin@example.com");
    };
    const ATEXT: &[u8] = b"!#$%&'*+-/=?^_`{|}~.";
    if local.is_empty()
        || local.len() > 64
        || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
        || !local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || ATEXT.contains(&b))
    {
        return err("must be an e-mail address such as admin@example.com");
    }
    let host = normalize_domain(field, host)?;
    Ok(format!("{local}@{host}"))
}

/// `#RRGGBB`, hexadecimal.
pub fn validate_color(field: &str, color: &str) -> Result<(), ValidationError> {
    let ok = color.len() == 7
        && color.starts_with('#')
        && color[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!("must be a colour as #RRGGBB, got {color:?}"),
        ))
    }
}

/// A display name: any script, stored verbatim, 1 to 200 characters, no
/// control characters, not blank.
pub fn validate_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let count = name.chars().count();
    if name.trim().is_empty() || count > 200 {
        return Err(ValidationError::new(
            field,
            "must be 1 to 200 characters and not blank",
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// An absolute `https://` URL with a valid host.
pub fn validate_https_url(field: &str, url: &str) -> Result<(), ValidationError> {
    let err = || {
        Err(ValidationError::new(
            field,
            "must be an https:// URL of at most 2048 characters",
        ))
    };
    let Some(rest) = url.strip_prefix("https://") else {
        return err();
    };
    if url.len() > 2048 {
        return err();
    }
    // URL characters only (RFC 3986), without quotes, parentheses,
    // backslashes or angle brackets: the URL lands in HTML, CSS and YAML.
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&*+,;=%".contains(&b);
    if let Some(bad) = url.bytes().find(|b| !safe(*b)) {
        return Err(ValidationError::new(
            field,
            format!(
                "may contain only URL characters (letters, digits and -._~:/?#[]@!$&*+,;=%), not {:?}",
                char::from(bad)
            ),
        ));
    }
    let bad_escape = url.match_indices('%').any(|(i, _)| {
        !url.as_bytes()
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return Err(ValidationError::new(
            field,
            "every % must start a percent-encoded byte such as %20",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once(':').map_or(authority, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            authority
        }
    });
    normalize_domain(field, host).map(|_| ())
}

#[cfg(test)]
mod tests;
