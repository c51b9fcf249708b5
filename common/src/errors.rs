//! Error reporting shared by every crate: an error and its causes on one line.

use std::error::Error;

/// `err` and its causes, one line, `: ` between them; a cause whose text
/// the line already holds (a wrapper that repeats its source) is left out.
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    enum Failure {
        #[error("failed to read the tenant")]
        ReadTenant(#[source] std::io::Error),
        #[error("failed to open: {0}")]
        Repeating(#[source] std::io::Error),
    }

    #[test]
    fn causes_follow_the_error_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(error_chain(&io()), "disk on fire");
        assert_eq!(
            error_chain(&Failure::ReadTenant(io())),
            "failed to read the tenant: disk on fire"
        );
        assert_eq!(
            error_chain(&Failure::Repeating(io())),
            "failed to open: disk on fire"
        );
    }
}
