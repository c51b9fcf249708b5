//! `serve` flags of notification delivery (each with an environment
//! variable), flattened into `ServeArgs`, and their validation.

use std::path::PathBuf;
use std::time::Duration;

use knowton_common::tenant::normalize_email;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::address::{AddressPolicy, parse_cidrs};
use super::channels::{
    GlobalChannels, SlackTarget, WebhookTarget, redact_url_to_host, validate_operator_url,
};
use super::email::{SmtpSettings, StartTls};
use super::{NotifySettings, RetryPolicy};

/// Notification flags of `knowton-coordinator serve`. `Debug` shows no
/// password, secret or webhook path.
#[derive(Clone, clap::Args)]
pub struct NotifyArgs {
    /// SMTP server for e-mail: smtp://[user:pass@]host[:port] (STARTTLS,
    /// port 587 by default) or smtps://… (implicit TLS, port 465 by
    /// default). Without it, e-mail waits in the outbox.
    #[arg(long, env = "KNOWTON_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// Sender of every e-mail, e.g. "KnowTon <alerts@example.com>".
    #[arg(long, env = "KNOWTON_SMTP_FROM")]
    pub smtp_from: Option<String>,

    /// STARTTLS on smtp:// connections.
    #[arg(
        long,
        env = "KNOWTON_SMTP_STARTTLS",
        value_enum,
        default_value_t = StartTls::Required
    )]
    pub smtp_starttls: StartTls,

    /// A CA (PEM) to trust for the SMTP server besides the system's, for a
    /// relay with a private certificate.
    #[arg(long, env = "KNOWTON_SMTP_CA")]
    pub smtp_ca: Option<PathBuf>,

    /// Operator address that receives every tenant's alerts (repeatable;
    /// comma-separated in the environment variable).
    #[arg(long, env = "KNOWTON_NOTIFY_EMAIL", value_delimiter = ',')]
    pub notify_email: Vec<String>,

    /// Operator webhook receiving every tenant's alerts as Alertmanager
    /// (version 4) payloads: https, or http to a loopback address. The
    /// operator's URLs may reach any address (tenants' may not: see
    /// --notify-allow-cidr).
    #[arg(long, env = "KNOWTON_NOTIFY_WEBHOOK", hide_env_values = true)]
    pub notify_webhook: Option<String>,

    /// Key of the X-Knowton-Signature HMAC-SHA256 of the operator webhook's bodies.
    #[arg(long, env = "KNOWTON_NOTIFY_WEBHOOK_SECRET", hide_env_values = true)]
    pub notify_webhook_secret: Option<String>,

    /// Operator Slack incoming-webhook URL receiving every tenant's alerts.
    #[arg(long, env = "KNOWTON_NOTIFY_SLACK", hide_env_values = true)]
    pub notify_slack: Option<String>,

    /// The coordinator's URL as notifications link to it (default: http://<--http-addr>).
    #[arg(long, env = "KNOWTON_EXTERNAL_URL")]
    pub external_url: Option<String>,

    /// Address range (CIDR) tenants' webhook and Slack URLs may reach although
    /// the policy refuses it (loopback, private, link-local, shared,
    /// cluster ranges), e.g. a receiver on the operator's private network.
    /// Repeatable; comma-separated in the environment variable.
    #[arg(long, env = "KNOWTON_NOTIFY_ALLOW_CIDR", value_delimiter = ',')]
    pub notify_allow_cidr: Vec<String>,

    /// The cluster's pod network (CIDR), refused to tenants' notification
    /// URLs. Repeatable; comma-separated. Private and shared ranges are
    /// refused anyway: this matters when the cluster uses public addresses.
    #[arg(long, env = "KNOWTON_CLUSTER_POD_CIDR", value_delimiter = ',')]
    pub cluster_pod_cidr: Vec<String>,

    /// The cluster's service network (CIDR), refused to tenants'
    /// notification URLs. Repeatable; comma-separated.
    #[arg(long, env = "KNOWTON_CLUSTER_SERVICE_CIDR", value_delimiter = ',')]
    pub cluster_service_cidr: Vec<String>,

    /// CA certificates (PEM) trusted besides the system's for webhook and
    /// Slack deliveries (operator's and tenants'), e.g. an internal CA.
    /// Used for nothing else.
    #[arg(long, env = "KNOWTON_NOTIFY_CA_FILE")]
    pub notify_ca_file: Option<PathBuf>,

    /// Seconds one delivery attempt (an SMTP session, an HTTP request) may take.
    #[arg(long, env = "KNOWTON_NOTIFY_TIMEOUT_SECONDS", default_value_t = 30)]
    pub notify_timeout_seconds: u64,

    /// First retry delay in milliseconds; it doubles with each attempt (with jitter).
    #[arg(long, env = "KNOWTON_NOTIFY_RETRY_BASE_MS", default_value_t = 5_000)]
    pub notify_retry_base_ms: u64,

    /// Longest retry delay in milliseconds.
    #[arg(long, env = "KNOWTON_NOTIFY_RETRY_MAX_MS", default_value_t = 600_000)]
    pub notify_retry_max_ms: u64,

    /// Seconds after which an undelivered notification is dead-lettered
    /// (listed by GET /api/v1/monitoring/notifications?state=failed).
    #[arg(long, env = "KNOWTON_NOTIFY_MAX_AGE_SECONDS", default_value_t = 86_400)]
    pub notify_max_age_seconds: u64,
}

impl Default for NotifyArgs {
    /// The same defaults as the flags.
    fn default() -> Self {
        NotifyArgs {
            smtp_url: None,
            smtp_from: None,
            smtp_starttls: StartTls::Required,
            smtp_ca: None,
            notify_email: Vec::new(),
            notify_webhook: None,
            notify_webhook_secret: None,
            notify_slack: None,
            external_url: None,
            notify_allow_cidr: Vec::new(),
            cluster_pod_cidr: Vec::new(),
            cluster_service_cidr: Vec::new(),
            notify_ca_file: None,
            notify_timeout_seconds: 30,
            notify_retry_base_ms: 5_000,
            notify_retry_max_ms: 600_000,
            notify_max_age_seconds: 86_400,
        }
    }
}

impl std::fmt::Debug for NotifyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("NotifyArgs")
            .field(
                "smtp_url",
                &self
                    .smtp_url
                    .as_deref()
                    .map(crate::store::redact_url_credentials),
            )
            .field("smtp_from", &self.smtp_from)
            .field("smtp_starttls", &self.smtp_starttls)
            .field("smtp_ca", &self.smtp_ca)
            .field("notify_email", &self.notify_email)
            .field(
                "notify_webhook",
                &self.notify_webhook.as_deref().map(redact_url_to_host),
            )
            .field(
                "notify_webhook_secret",
                &redacted(&self.notify_webhook_secret),
            )
            .field(
                "notify_slack",
                &self.notify_slack.as_deref().map(redact_url_to_host),
            )
            .field("external_url", &self.external_url)
            .field("notify_allow_cidr", &self.notify_allow_cidr)
            .field("cluster_pod_cidr", &self.cluster_pod_cidr)
            .field("cluster_service_cidr", &self.cluster_service_cidr)
            .field("notify_ca_file", &self.notify_ca_file)
            .field("notify_timeout_seconds", &self.notify_timeout_seconds)
            .field("notify_retry_base_ms", &self.notify_retry_base_ms)
            .field("notify_retry_max_ms", &self.notify_retry_max_ms)
            .field("notify_max_age_seconds", &self.notify_max_age_seconds)
            .finish()
    }
}

impl NotifyArgs {
    /// Checks every flag, adding each problem to `errors`.
    pub fn validate(&self, errors: &mut Vec<String>) -> Option<NotifySettings> {
        let before = errors.len();
        let smtp = match (&self.smtp_url, &self.smtp_from) {
            (Some(url), Some(from)) => {
                SmtpSettings::parse(url, from, self.smtp_starttls, self.smtp_ca.clone())
                    .map_err(|e| errors.extend(e))
                    .ok()
            }
            (Some(_), None) => {
                errors.push("--smtp-url needs --smtp-from / KNOWTON_SMTP_FROM".to_owned());
                None
            }
            (None, _) => {
                if self.smtp_ca.is_some() {
                    errors.push("--smtp-ca is only used with --smtp-url".to_owned());
                }
                None
            }
        };
        let mut emails: Vec<String> = Vec::new();
        for email in &self.notify_email {
            match normalize_email("--notify-email", email.trim()) {
                Ok(e) if !emails.iter().any(|x| x.eq_ignore_ascii_case(&e)) => emails.push(e),
                Ok(_) => {}
                Err(e) => errors.push(format!("--notify-email {email:?}: {}", e.message)),
            }
        }
        if !emails.is_empty() && self.smtp_url.is_none() {
            errors.push("--notify-email needs --smtp-url to deliver to".to_owned());
        }
        let webhook = match (&self.notify_webhook, &self.notify_webhook_secret) {
            (Some(url), secret) => validate_operator_url("--notify-webhook", url)
                .map_err(|e| {
                    errors.push(format!(
                        "--notify-webhook {:?}: {}",
                        redact_url_to_host(url),
                        e.message
                    ))
                })
                .ok()
                .map(|url| WebhookTarget {
                    url,
                    secret: secret.clone(),
                }),
            (None, Some(_)) => {
                errors.push("--notify-webhook-secret needs --notify-webhook".to_owned());
                None
            }
            (None, None) => None,
        };
        if self
            .notify_webhook_secret
            .as_ref()
            .is_some_and(|s| s.chars().count() < 16)
        {
            errors.push("--notify-webhook-secret must be at least 16 characters".to_owned());
        }
        let slack = self.notify_slack.as_ref().and_then(|url| {
            validate_operator_url("--notify-slack", url)
                .map_err(|e| {
                    errors.push(format!(
                        "--notify-slack {:?}: {}",
                        redact_url_to_host(url),
                        e.message
                    ))
                })
                .ok()
                .map(|url| SlackTarget { url })
        });
        let external_url = match &self.external_url {
            Some(url) => match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    url.trim_end_matches('/').to_owned()
                }
                _ => {
                    errors.push(format!("--external-url {url:?}: expected an http(s) URL"));
                    String::new()
                }
            },
            // Filled in with the bound address when serving starts.
            None => String::new(),
        };
        let tenant_addresses = AddressPolicy::new(
            parse_cidrs("--cluster-pod-cidr", &self.cluster_pod_cidr, errors),
            parse_cidrs("--cluster-service-cidr", &self.cluster_service_cidr, errors),
            parse_cidrs("--notify-allow-cidr", &self.notify_allow_cidr, errors),
        );
        let extra_roots = match &self.notify_ca_file {
            Some(path) => read_roots(path).unwrap_or_else(|e| {
                errors.push(e);
                Vec::new()
            }),
            None => Vec::new(),
        };
        if !(1..=600).contains(&self.notify_timeout_seconds) {
            errors.push("--notify-timeout-seconds must be 1 to 600".to_owned());
        }
        if self.notify_retry_base_ms == 0 || self.notify_retry_max_ms < self.notify_retry_base_ms {
            errors.push(
                "--notify-retry-base-ms must be at least 1 and --notify-retry-max-ms at least as long"
                    .to_owned(),
            );
        }
        if self.notify_max_age_seconds == 0 {
            errors.push("--notify-max-age-seconds must be at least 1".to_owned());
        }
        if errors.len() > before {
            return None;
        }
        Some(NotifySettings {
            smtp,
            global: GlobalChannels {
                emails,
                webhook,
                slack,
            },
            retry: RetryPolicy {
                base: Duration::from_millis(self.notify_retry_base_ms),
                max: Duration::from_millis(self.notify_retry_max_ms),
                max_age: Duration::from_secs(self.notify_max_age_seconds),
            },
            timeout: Duration::from_secs(self.notify_timeout_seconds),
            external_url,
            tenant_addresses,
            extra_roots,
        })
    }
}

/// The CA certificates of `--notify-ca-file`, each checked to be usable as
/// a trust anchor (so building the HTTP client cannot fail on them).
fn read_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("--notify-ca-file {shown}: {e}"))?;
    let mut roots = Vec::new();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("--notify-ca-file {shown}: {e}"))?;
        rustls::RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| format!("--notify-ca-file {shown}: not a usable CA certificate: {e}"))?;
        roots.push(cert);
    }
    if roots.is_empty() {
        return Err(format!(
            "--notify-ca-file {shown}: holds no PEM certificate"
        ));
    }
    Ok(roots)
}
