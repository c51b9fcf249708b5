//! E-mail over SMTP (lettre on rustls with ring): STARTTLS required by
//! default, implicit TLS for `smtps://`, optional AUTH, multipart text and
//! HTML, and a `Message-ID` derived from the idempotency key.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::Url;
use sha2::{Digest, Sha256};

use super::Attempt;
use super::welcome::EmailBody;

/// The header carrying the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "X-Knowton-Idempotency-Key";

/// How `smtp://` connections are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StartTls {
    /// Refuse to send unless the server offers STARTTLS (the default).
    #[default]
    Required,
    /// Use STARTTLS when the server offers it, send in the clear otherwise.
    Opportunistic,
    /// Never encrypt (only for a relay on the same host).
    Never,
}

/// A validated SMTP configuration. `Debug` never shows the password.
#[derive(Clone, PartialEq)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    /// `smtps://`: TLS from the first byte.
    pub implicit_tls: bool,
    pub starttls: StartTls,
    pub username: Option<String>,
    password: Option<String>,
    /// `From:`, e.g. `KnowTon <alerts@example.com>`.
    pub from: Mailbox,
    /// An extra CA to trust (a private relay), PEM.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("server", &self.display())
            .field("starttls", &self.starttls)
            .field("from", &self.from.to_string())
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SmtpSettings {
    /// Parses `smtp://[user:pass@]host[:port]` (port 587 by default) or
    /// `smtps://…` (port 465 by default); user and password are
    /// percent-decoded.
    pub fn parse(
        url: &str,
        from: &str,
        starttls: StartTls,
        ca_file: Option<PathBuf>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let shown = crate::store::redact_url_credentials(url);
        let parsed = Url::parse(url).ok();
        let implicit_tls = match parsed.as_ref().map(Url::scheme) {
            Some("smtp") => false,
            Some("smtps") => true,
            _ => {
                errors.push(format!(
                    "--smtp-url {shown:?}: expected smtp://[user:pass@]host[:port] or smtps://…"
                ));
                false
            }
        };
        let host = parsed
            .as_ref()
            .and_then(Url::host_str)
            .filter(|h| !h.is_empty())
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned());
        if parsed.is_some() && host.is_none() {
            errors.push(format!("--smtp-url {shown:?}: no host"));
        }
        if parsed
            .as_ref()
            .is_some_and(|u| !matches!(u.path(), "" | "/") || u.query().is_some())
        {
            errors.push(format!(
                "--smtp-url {shown:?}: takes no path or query; use --smtp-starttls"
            ));
        }
        let decode = |s: &str| {
            percent_decode(s).ok_or_else(|| {
                format!("--smtp-url {shown:?}: user or password is not valid percent-encoded UTF-8")
            })
        };
        let (username, password) = match &parsed {
            Some(u) if !u.username().is_empty() => {
                let user = decode(u.username()).map_err(|e| errors.push(e)).ok();
                let pass = decode(u.password().unwrap_or_default())
                    .map_err(|e| errors.push(e))
                    .ok();
                (user, pass)
            }
            _ => (None, None),
        };
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| {
                errors.push(format!(
                    "--smtp-from {from:?}: not an address such as \"KnowTon <alerts@example.com>\" ({e})"
                ))
            })
            .ok();
        if implicit_tls && starttls != StartTls::Required {
            errors.push(
                "--smtp-starttls applies to smtp:// only; smtps:// is always encrypted".to_owned(),
            );
        }
        match (host, from) {
            (Some(host), Some(from)) if errors.is_empty() => Ok(SmtpSettings {
                port: parsed
                    .as_ref()
                    .and_then(Url::port)
                    .unwrap_or(if implicit_tls { 465 } else { 587 }),
                host,
                implicit_tls,
                starttls,
                username,
                password,
                from,
                ca_file,
            }),
            _ => Err(errors),
        }
    }

    /// `smtp://user:***@host:port` for logs.
    pub fn display(&self) -> String {
        let scheme = if self.implicit_tls { "smtps" } else { "smtp" };
        let user = self
            .username
            .as_ref()
            .map(|u| format!("{u}:***@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}:{}", self.host, self.port)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Failure to set up the SMTP client.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    #[error("failed to read the SMTP CA file {path}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the SMTP CA file {path} holds no valid PEM certificate")]
    ParseCa {
        path: PathBuf,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("failed to set up TLS for the SMTP server {host}")]
    Tls {
        host: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
}

/// Sends e-mail through the configured SMTP server, one connection per message.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of Message-IDs: the sender's domain.
    id_domain: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(settings: &SmtpSettings, timeout: Duration) -> Result<Self, MailerError> {
        crate::certs::install_crypto_provider();
        let mut tls = TlsParameters::builder(settings.host.clone());
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|source| MailerError::ReadCa {
                path: path.clone(),
                source,
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|source| MailerError::ParseCa {
                path: path.clone(),
                source,
            })?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls.build_rustls().map_err(|source| MailerError::Tls {
            host: settings.host.clone(),
            source,
        })?;
        let tls = match (settings.implicit_tls, settings.starttls) {
            (true, _) => Tls::Wrapper(tls),
            (false, StartTls::Required) => Tls::Required(tls),
            (false, StartTls::Opportunistic) => Tls::Opportunistic(tls),
            (false, StartTls::Never) => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .tls(tls)
            .timeout(Some(timeout));
        if let Some(user) = &settings.username {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                settings.password.clone().unwrap_or_default(),
            ));
        }
        Ok(Mailer {
            transport: builder.build(),
            id_domain: settings.from.email.domain().to_owned(),
            from: settings.from.clone(),
        })
    }

    /// Sends one message to `to`.
    pub async fn send(&self, to: &str, subject: &str, body: &EmailBody, key: &str) -> Attempt {
        let to = match to.parse::<Mailbox>() {
            Ok(to) => to,
            Err(err) => {
                return Attempt::Permanent {
                    error: format!("invalid recipient address: {err}"),
                };
            }
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id(key, &self.id_domain)))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str(IDEMPOTENCY_HEADER),
                key.to_owned(),
            ))
            .user_agent(concat!("knowton-coordinator/", env!("CARGO_PKG_VERSION")).to_owned())
            .date_now()
            .multipart(MultiPart::alternative_plain_html(
                body.text.clone(),
                body.html.clone(),
            ));
        let message = match message {
            Ok(message) => message,
            Err(err) => {
                return Attempt::Permanent {
                    error: format!("failed to build the message: {err}"),
                };
            }
        };
        match self.transport.send(message).await {
            Ok(_) => Attempt::Delivered,
            Err(err) => classify(&err),
        }
    }
}

/// Permanent SMTP replies (5xx) dead-letter the message, except those
/// about our own authentication, which an operator fixes and which must
/// not lose mail meanwhile; everything else (4xx, network, TLS, timeouts)
/// is retried.
fn classify(err: &lettre::transport::smtp::Error) -> Attempt {
    let error = knowton_common::error_chain(err);
    let auth = err
        .status()
        .is_some_and(|code| matches!(code.to_string().as_str(), "530" | "534" | "535" | "538"));
    if err.is_permanent() && !auth {
        Attempt::Permanent { error }
    } else {
        Attempt::Retry { error, after: None }
    }
}

/// `<hex(sha256(key))[..32]@domain>`: the same for every attempt of a
/// message, so the receiving side can recognise a repeat.
pub fn message_id(key: &str, domain: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("<{}@{domain}>", knowton_common::hex(&digest[..16]))
}
