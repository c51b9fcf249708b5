//! A real S3 server for the object-store tests: moto's server mode
//! (`python -m moto.server`, from the test venv) on a free loopback port,
//! with a bucket of a fresh random name and IAM authentication switched on,
//! so that every request must carry a valid SigV4 signature by the access
//! key moto issued for the test.
//!
//! Moto issues its own access keys (random ones: it has no way to import a
//! chosen pair), so [`TestS3::access_key_id`] and
//! [`TestS3::secret_access_key`] differ from server to server.
//!
//! The venv is made by `tests/venv` (which `tests/run` calls). Without it
//! the test fails and says so: it never passes without having reached S3.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::prefix::PrefixStore;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio::sync::oneshot;

use crate::eventually_showing;

/// The region the server is addressed in (moto accepts any; S3 clients
/// sign with it).
pub const REGION: &str = "us-east-1";

/// The IAM user whose access key signs the test's requests.
const USER: &str = "knowton-test";

/// How long moto may take to start (it imports every service it mocks).
const STARTUP: Duration = Duration::from_secs(60);

/// A running S3 server with one bucket; stopped on drop.
#[derive(Debug)]
pub struct TestS3 {
    endpoint: String,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
    _child: Child,
}

impl TestS3 {
    /// Starts moto's server on a free loopback port, creates an IAM user
    /// allowed every S3 action with an access key, creates a bucket of a
    /// fresh random name, and then switches authentication on.
    pub async fn start() -> Self {
        // The setup requests below (reqwest) and object_store's client
        // both build a rustls client config, even for plain http, and the
        // workspace's reqwest brings no provider of its own.
        knowton_coordinator::certs::install_crypto_provider();
        let python = venv_python();
        let mut child = Command::new(&python)
            .args(["-m", "moto.server", "--host", "127.0.0.1", "--port", "0"])
            // Authentication stays off for the setup, whatever the caller's
            // environment says; `enable_auth` switches it on.
            .env_remove("INITIAL_NO_AUTH_ACTION_COUNT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} -m moto.server: {e}", python.display()));
        let port = tokio::time::timeout(STARTUP, listening_port(child.stderr.take().unwrap()))
            .await
            .unwrap_or_else(|_| panic!("moto's server listens within {STARTUP:?}"))
            .unwrap_or_else(|| {
                panic!(
                    "moto's server exited before listening (its output is above): \
                     is moto in {}? Run tests/venv (tests/run does) first",
                    venv().display()
                )
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually_showing(STARTUP, "moto's server to answer", || {
            let request = http.get(format!("{endpoint}/moto-api/")).send();
            async move {
                match request.await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;

        let setup = Setup {
            http: &http,
            endpoint: &endpoint,
        };
        setup
            .iam(&[("Action", "CreateUser"), ("UserName", USER)])
            .await;
        let key = setup
            .iam(&[("Action", "CreateAccessKey"), ("UserName", USER)])
            .await;
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        setup
            .iam(&[
                ("Action", "PutUserPolicy"),
                ("UserName", USER),
                ("PolicyName", "s3"),
                ("PolicyDocument", policy),
            ])
            .await;
        let bucket = format!("knowton-test-{}", uuid::Uuid::new_v4().simple());
        setup.create_bucket(&bucket).await;
        setup.enable_auth().await;

        TestS3 {
            access_key_id: xml_text(&key, "AccessKeyId"),
            secret_access_key: xml_text(&key, "SecretAccessKey"),
            endpoint,
            bucket,
            _child: child,
        }
    }

    /// The server's base URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The test's bucket (addressed path-style: `<endpoint>/<bucket>/<key>`).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// The access key id moto issued for the test.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret of [`TestS3::access_key_id`].
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// A builder for the whole bucket with the test's credentials, for a
    /// test to change (a wrong secret, say) before `build()`.
    pub fn builder(&self) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_bucket_name(self.bucket())
            .with_region(self.region())
            .with_access_key_id(self.access_key_id())
            .with_secret_access_key(self.secret_access_key())
    }

    /// The bucket's objects under `prefix` (`""`: the whole bucket), signed
    /// with the test's credentials. Conditional puts (`PutMode::Create`)
    /// use `If-None-Match: *`, object_store's default for S3.
    pub fn store(&self, prefix: &str) -> PrefixStore<AmazonS3> {
        let s3 = self.builder().build().expect("an S3 store for moto");
        PrefixStore::new(s3, prefix)
    }

    /// The environment that points an S3 client in another process (the
    /// coordinator's, or any AWS SDK's) at this server with the test's
    /// credentials. The bucket is not part of it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

/// The test venv: `$KNOWTON_TEST_VENV` or the workspace's target/test-venv.
fn venv() -> PathBuf {
    std::env::var_os("KNOWTON_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .expect("tests/ is in the workspace")
                .join("target/test-venv")
        })
}

/// The venv's Python, or a failure that says how to make it.
fn venv_python() -> PathBuf {
    let python = venv().join("bin/python");
    assert!(
        python.is_file(),
        "the S3 tests need moto's server in {}: run tests/venv (tests/run does) first",
        venv().display()
    );
    python
}

/// Reads moto's log until werkzeug says where it listens (`* Running on
/// http://127.0.0.1:<port>`) and returns that port, or `None` when the
/// server exits first. Every line, before and after, goes to the test's
/// output (shown when a test fails): moto logs each request there, and the
/// pipe must be drained for the server not to block.
async fn listening_port(stderr: ChildStderr) -> Option<u16> {
    const LISTENING: &str = "Running on http://127.0.0.1:";
    let (port_tx, port_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut port_tx = Some(port_tx);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("moto: {line}");
            let port = line.split_once(LISTENING).and_then(|(_, rest)| {
                let digits = rest.trim_end_matches(|c: char| !c.is_ascii_digit());
                digits.parse::<u16>().ok()
            });
            if let Some(port) = port
                && let Some(tx) = port_tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    port_rx.await.ok()
}

/// The requests that prepare a new server, before authentication is on.
struct Setup<'a> {
    http: &'a reqwest::Client,
    endpoint: &'a str,
}

impl Setup<'_> {
    /// An IAM Query API call; returns the response's XML.
    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut body = form_encode(params);
        body.push_str("&Version=2010-05-08");
        let reply = self
            .http
            .post(self.endpoint)
            .header(AUTHORIZATION, unchecked_authorization("iam"))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("an IAM request to moto");
        expect_success(reply, &format!("IAM {}", params[0].1)).await
    }

    async fn create_bucket(&self, bucket: &str) {
        let reply = self
            .http
            .put(format!("{}/{bucket}", self.endpoint))
            .header(AUTHORIZATION, unchecked_authorization("s3"))
            .send()
            .await
            .expect("a CreateBucket request to moto");
        expect_success(reply, "S3 CreateBucket").await;
    }

    /// From now on every request is authenticated and authorised: the
    /// count of requests moto lets through unchecked drops to 0.
    async fn enable_auth(&self) {
        let reply = self
            .http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            // Read as the raw body, which a form content type would hide.
            .header(CONTENT_TYPE, "text/plain")
            .body("0")
            .send()
            .await
            .expect("moto's reset-auth");
        expect_success(reply, "reset-auth").await;
    }
}

/// An `Authorization` header moto routes by (its credential scope names the
/// service) and, until authentication is on, does not check.
fn unchecked_authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=setup/20000101/{REGION}/{service}/aws4_request, \
         SignedHeaders=host, Signature=0"
    )
}

async fn expect_success(reply: reqwest::Response, what: &str) -> String {
    let status = reply.status();
    let body = reply.text().await.unwrap_or_default();
    assert!(status.is_success(), "moto {what}: {status}: {body}");
    body
}

/// `application/x-www-form-urlencoded`, every byte but the unreserved ones
/// percent-encoded.
fn form_encode(params: &[(&str, &str)]) -> String {
    fn encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The text of the first `<tag>` of `xml` (moto's values here need no
/// unescaping: key ids and base64-like secrets).
fn xml_text(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .map(|i| i + open.len())
        .unwrap_or_else(|| panic!("no <{tag}> in moto's reply {xml}"));
    let end = xml[start..]
        .find(&format!("</{tag}>"))
        .unwrap_or_else(|| panic!("no </{tag}> in moto's reply {xml}"));
    xml[start..start + end].to_owned()
}
