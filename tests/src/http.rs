//! Talking to a test coordinator over HTTP: requests as the admin or with
//! a token, and the replies with their JSON bodies.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{ADMIN_TOKEN, METRICS_TOKEN, TestCoordinator, tenant_request};

impl TestCoordinator {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET /metrics` with the metrics token: the exposition text.
    pub async fn scrape(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics"))
            .bearer_auth(METRICS_TOKEN)
            .send()
            .await
            .expect("scrape reaches the coordinator");
        assert_eq!(response.status(), StatusCode::OK, "scrape /metrics");
        response.text().await.expect("metrics body")
    }

    /// Sends a request with `token`, JSON `body`, and returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Reply::from(req.send().await.expect("request reaches the coordinator")).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// Purges `slug` through the API, which must succeed.
    pub async fn purge(&self, slug: &str) {
        let purged = self
            .admin(
                Method::DELETE,
                &format!("/api/v1/tenants/{slug}?purge=true"),
                None,
            )
            .await;
        assert_eq!(purged.status, StatusCode::OK, "{}", purged.body);
    }

    /// `POST /api/v1/tenants/{slug}/restore` with `body`. A restore that
    /// starts (202) is polled until its job ends: the reply is then the
    /// 202 with the job as it ended for its body. Any other reply (a dry
    /// run, a refusal) is returned as it is.
    pub async fn restore(&self, slug: &str, body: Value) -> Reply {
        let into = body["into"].as_str().unwrap_or(slug).to_owned();
        let started = self
            .admin(
                Method::POST,
                &format!("/api/v1/tenants/{slug}/restore"),
                Some(body),
            )
            .await;
        if started.status != StatusCode::ACCEPTED {
            return started;
        }
        assert_eq!(started.body["status"], "running", "{}", started.body);
        let path = format!(
            "/api/v1/tenants/{into}/restores/{}",
            started.body["id"].as_str().expect("a job id")
        );
        let job = crate::eventually_showing(
            std::time::Duration::from_secs(60),
            "the restore job ends",
            || async {
                let reply = self.admin(Method::GET, &path, None).await;
                match reply.body["status"].as_str() {
                    Some("succeeded" | "failed") => Ok(reply.body),
                    _ => Err(reply.body.to_string()),
                }
            },
        )
        .await;
        Reply {
            body: job,
            ..started
        }
    }

    /// Polls `slug`'s backups until its latest run has finished; the
    /// listing then.
    pub async fn finished_backup_run(&self, slug: &str) -> Value {
        crate::eventually_showing(
            std::time::Duration::from_secs(30),
            "the backup run finishes",
            || async {
                let reply = self
                    .admin(
                        Method::GET,
                        &format!("/api/v1/tenants/{slug}/backups"),
                        None,
                    )
                    .await;
                match reply.body["runs"][0]["status"].as_str() {
                    Some("succeeded" | "failed") => Ok(reply.body.clone()),
                    _ => Err(reply.body.to_string()),
                }
            },
        )
        .await
    }

    /// Provisions a tenant through the API and returns the 201 body.
    pub async fn provision(&self, slug: &str, plan: &str) -> Value {
        let reply = self
            .admin(
                Method::POST,
                "/api/v1/tenants",
                Some(tenant_request(slug, plan)),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "provision {slug}: {}",
            reply.body
        );
        reply.body
    }

    /// `GET /api/v1/monitoring/health` for `slug`, as the admin.
    pub async fn monitoring_health(&self, slug: &str) -> Reply {
        let response = self
            .http
            .get(self.url("/api/v1/monitoring/health"))
            .bearer_auth(ADMIN_TOKEN)
            .header("X-Tenant-Slug", slug)
            .send()
            .await
            .expect("request reaches the coordinator");
        Reply::from(response).await
    }

    /// `GET /api/v1/monitoring/notifications?<query>` (up to 200), as the admin.
    pub async fn notifications(&self, query: &str) -> Vec<Value> {
        let reply = self
            .admin(
                Method::GET,
                &format!("/api/v1/monitoring/notifications?limit=200&{query}"),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["notifications"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Number of tenants the API lists.
    pub async fn tenant_count(&self) -> usize {
        let reply = self
            .admin(Method::GET, "/api/v1/tenants?limit=200", None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["tenants"].as_array().map_or(0, Vec::len)
    }
}

/// A response: status, headers and JSON body (`Null` if not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an error response and returns its `(code, field)`.
    pub fn error(&self, status: StatusCode) -> (String, String) {
        assert_eq!(self.status, status, "{}", self.body);
        let error = &self.body["error"];
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        (
            error["code"].as_str().unwrap_or_default().to_owned(),
            error["field"].as_str().unwrap_or_default().to_owned(),
        )
    }
}
