//! The welcome e-mail a new tenant's admin receives, in text and HTML.

use serde::{Deserialize, Serialize};

/// A rendered e-mail body.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailBody {
    pub text: String,
    pub html: String,
}

impl std::fmt::Debug for EmailBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmailBody(..)")
    }
}

pub fn subject(tenant_name: &str) -> String {
    format!("Welcome to {tenant_name} on KnowTon")
}

/// Renders the welcome e-mail. The temporary password is in the body, so the
/// body is only ever stored sealed.
pub fn render(tenant_name: &str, domain: &str, admin_email: &str, password: &str) -> EmailBody {
    let login_url = format!("https://{domain}");
    let text = format!(
        "Welcome to {tenant_name}!\n\n\
         Your KnowTon instance is ready.\n\n\
         Login URL: {login_url}\n\
         Admin email: {admin_email}\n\
         Temporary password: {password}\n\n\
         You must change this password when you first log in. It expires with that first login.\n"
    );
    let (name, url, email, pw) = (
        escape(tenant_name),
        escape(&login_url),
        escape(admin_email),
        escape(password),
    );
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n\
         <h1>Welcome to {name}!</h1>\n\
         <p>Your KnowTon instance is ready.</p>\n\
         <table>\n\
         <tr><td>Login URL</td><td><a href=\"{url}\">{url}</a></td></tr>\n\
         <tr><td>Admin email</td><td>{email}</td></tr>\n\
         <tr><td>Temporary password</td><td><code>{pw}</code></td></tr>\n\
         </table>\n\
         <p><strong>You must change this password when you first log in.</strong></p>\n\
         </body></html>\n"
    );
    EmailBody { text, html }
}

/// Escapes text for HTML bodies and attributes (every e-mail we send).
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_mail_carries_everything_and_escapes_html() {
        let body = render(
            "<Acme & Co>",
            "acme.knowton.com",
            "admin@acme.com",
            "p@ss<word>",
        );
        for part in [&body.text, &body.html] {
            assert!(part.contains("https://acme.knowton.com"));
            assert!(part.contains("admin@acme.com"));
            assert!(part.contains("must change this password"));
        }
        assert!(body.text.contains("<Acme & Co>") && body.text.contains("p@ss<word>"));
        assert!(
            body.html.contains("&lt;Acme &amp; Co&gt;") && body.html.contains("p@ss&lt;word&gt;")
        );
        assert!(!body.html.contains("<Acme"));
    }
}
