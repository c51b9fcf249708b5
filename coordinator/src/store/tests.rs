//! The store's own unit tests: SQLite durability, URL redaction, backends.

use super::*;

/// Hardening review, finding 12: commits were `synchronous = NORMAL`.
#[tokio::test]
async fn sqlite_commits_are_synced_before_they_return() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("k.db").display());
    let Backend::Sqlite(opts) = Backend::from_url(&url).unwrap() else {
        panic!("not sqlite");
    };
    let mut conn = sqlx::SqliteConnection::connect_with(&sqlite_options(opts))
        .await
        .unwrap();
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let (sync,): (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        (mode.as_str(), sync),
        ("wal", 2),
        "WAL with synchronous = FULL (2)"
    );
    let (cache,): (i64,) = sqlx::query_as("PRAGMA cache_size")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        cache,
        -i64::from(SQLITE_CACHE_KIB),
        "each connection's page cache is bounded in KiB, below SQLite's 2,000"
    );
}

#[test]
fn urls_are_redacted() {
    assert_eq!(
        redact_url_credentials("postgres://app:s3cret@db:5432/knowton"),
        "postgres://app:***@db:5432/knowton"
    );
    assert_eq!(
        redact_url_credentials("sqlite:knowton.db"),
        "sqlite:knowton.db"
    );
    assert_eq!(
        redact_url_credentials("postgres://app:p@ss@db/knowton"),
        "postgres://app:***@db/knowton"
    );
    assert_eq!(
        redact_url_credentials("sqlite:knowton.db?mode=rwc"),
        "sqlite:knowton.db?mode=rwc"
    );
    // Passwords and tokens in the query string, and a fragment.
    assert_eq!(
        redact_url_credentials(
            "postgres://db:5432/knowton?user=app&password=s3cret&sslmode=require&sslpassword=k3y"
        ),
        "postgres://db:5432/knowton?user=app&password=***&sslmode=require&sslpassword=***"
    );
    assert_eq!(
        redact_url_credentials("smtp://mail.example.com?auth_token=t0ken&empty=&s3cret#frag"),
        "smtp://mail.example.com?auth_token=***&empty=&***#***"
    );
    // An @ in the query is not taken for the user's.
    assert_eq!(
        redact_url_credentials("postgres://db/k?user=a@b&Password=x:y@z"),
        "postgres://db/k?user=a@b&Password=***"
    );
}

#[test]
fn no_secret_survives_redaction() {
    for secret in ["s3cret", "hunter2"] {
        for url in [
            format!("postgres://u:{secret}@h/d"),
            format!("postgres://h/d?password={secret}"),
            format!("postgres://h/d?PASSWORD={secret}&sslmode=disable"),
            format!("postgres://h/d?pass%77ord={secret}"),
            format!("smtps://h?{secret}"),
            format!("smtp://h/#{secret}"),
        ] {
            assert!(!redact_url_credentials(&url).contains(secret), "{url}");
        }
    }
}

proptest::proptest! {
    /// A password, a query value not known to be harmless, or a
    /// fragment never survives, wherever it is.
    #[test]
    fn redaction_hides_every_credential(
        secret in "[A-Za-z0-9]{12,24}",
        name in "[a-z_]{1,12}",
        user in "[a-z]{1,8}",
        host in "[a-z]{1,10}",
    ) {
        proptest::prop_assume!(!HARMLESS_PARAMETERS.contains(&name.as_str()));
        for url in [
            format!("postgres://{user}:{secret}@{host}:5432/db"),
            format!("postgres://{host}/db?sslmode=require&{name}={secret}"),
            format!("smtps://{user}@{host}?{name}={secret}&port=465"),
            format!("smtp://{host}/#{secret}"),
        ] {
            let shown = redact_url_credentials(&url);
            proptest::prop_assert!(!shown.contains(&secret), "{} shown as {}", url, shown);
            proptest::prop_assert!(shown.contains(&host));
        }
    }

    /// Never panics, whatever the text.
    #[test]
    fn redaction_takes_any_text(url in "\\PC{0,80}") {
        let _ = redact_url_credentials(&url);
    }
}

#[test]
fn backends_from_urls() {
    assert!(matches!(
        Backend::from_url("sqlite:x.db"),
        Ok(Backend::Sqlite(_))
    ));
    assert!(matches!(
        Backend::from_url("postgres://postgres@127.0.0.1/test"),
        Ok(Backend::Postgres(_))
    ));
    let err = Backend::from_url("mysql://u:pw@h/db")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mysql://u:***@h/db"), "{err}");
}
