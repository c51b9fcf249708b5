//! `pods/{name}/exec` over a WebSocket, as the API server and the kubelet
//! serve it: the `v5.channel.k8s.io` or `v4.channel.k8s.io` subprotocol,
//! each binary message prefixed by its channel (0 stdin, 1 stdout, 2
//! stderr, 3 the exit `Status` as JSON; v5's `255, 0` closes stdin). The
//! command runs here as a real process, with the pod's volumes mapped to
//! the local directories a test chose ([`super::FakeKube::mount_claim`]);
//! its program is looked up by name among those a test provides
//! ([`super::FakeKube::provide_command`]).
//!
//! And the kubelet's part of a pod's start: a pod created through the API
//! that mounts a mapped claim is scheduled (on the node its affinity
//! names, else `node-0`) and Running at once. Other pods stay Pending.
//!
//! A claim may instead be hostile: the exec then sends the bytes a test
//! gave as the command's stdout, whatever it was asked.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::resources::PODS;
use super::status::StatusError;
use super::{Shared, lock, write};

/// What a claim is, seen from a pod that mounts it.
#[derive(Debug, Clone)]
pub enum Backing {
    /// A local directory.
    Dir(PathBuf),
    /// Any command run in a pod mounting it prints these bytes and exits 0.
    Hostile(Vec<u8>),
}

/// Claims and programs the tests set.
#[derive(Debug, Default)]
pub(super) struct Mounts {
    /// (namespace, claim) → its backing.
    pub claims: HashMap<(String, String), Backing>,
    /// Program name → local binary.
    pub commands: HashMap<String, PathBuf>,
    /// The pods the kubelet started, as they were then.
    pub started: Vec<Value>,
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// The claims `pod` mounts, with their mount paths in its first container.
fn mounted(pod: &Value, mounts: &Mounts) -> Vec<(String, Backing)> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let container_mounts = pod["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for volume in volumes {
        let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() else {
            continue;
        };
        let Some(backing) = mounts.claims.get(&(namespace.to_owned(), claim.to_owned())) else {
            continue;
        };
        for mount in &container_mounts {
            if mount["name"] == volume["name"]
                && let Some(path) = mount["mountPath"].as_str()
            {
                out.push((path.to_owned(), backing.clone()));
            }
        }
    }
    out
}

/// The kubelet: a pod just created that mounts a mapped claim is bound
/// to its node and runs.
pub(super) fn start_if_mounted(shared: &Shared, namespace: &str, name: &str) {
    let mut store = shared.store();
    let key = (namespace.to_owned(), name.to_owned());
    let Some(mut pod) = store.get(&PODS, &key).cloned() else {
        return;
    };
    if mounted(&pod, &lock(&shared.mounts)).is_empty() {
        return;
    }
    let node = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0]["values"][0]
        .as_str()
        .unwrap_or("node-0")
        .to_owned();
    pod["spec"]["nodeName"] = json!(node);
    let container = pod["spec"]["containers"][0]["name"].clone();
    pod["status"] = json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": container, "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}],
    });
    lock(&shared.mounts).started.push(pod.clone());
    write::put_for_test(&mut store, &PODS, pod, "kubelet");
}

/// `GET` or `POST /api/v1/namespaces/{namespace}/pods/{name}/exec`.
pub(super) async fn exec(
    State(shared): State<Arc<Shared>>,
    Path((namespace, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Result<Response, StatusError> {
    let pod = shared
        .store()
        .get(&PODS, &(namespace.clone(), name.clone()))
        .cloned()
        .ok_or_else(|| StatusError::object_not_found(&PODS, &name))?;
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let command: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err(StatusError::bad_request(
            "you must specify at least 1 command",
        ));
    }
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match params.iter().find(|(k, _)| k == "container") {
        Some((_, c)) => c.clone(),
        None if containers.len() == 1 => containers[0].to_owned(),
        None => {
            return Err(StatusError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: {containers:?}"
            )));
        }
    };
    if !containers.contains(&container.as_str()) {
        return Err(StatusError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    if pod["status"]["phase"] != "Running" {
        return Err(StatusError::bad_request(format!(
            "unable to upgrade connection: container not found (\"{container}\")"
        )));
    }
    let protocol = subprotocol(request.headers())?;
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| StatusError::bad_request("missing Sec-WebSocket-Key"))?
        .clone();
    let run = {
        let mounts = lock(&shared.mounts);
        let volumes = mounted(&pod, &mounts);
        match volumes.iter().find_map(|(_, b)| match b {
            Backing::Hostile(bytes) => Some(bytes.clone()),
            Backing::Dir(_) => None,
        }) {
            Some(bytes) => Run::Hostile(bytes),
            None => Run::Process(local_command(&command, &volumes, &mounts)?),
        }
    };
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        run.serve(ws, command).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("an accept key is a header value"),
    );
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    Ok(response)
}

/// The subprotocol chosen: v5 when offered, else v4; the older, text or
/// base64 ones are not served.
fn subprotocol(headers: &HeaderMap) -> Result<&'static str, StatusError> {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Err(StatusError::bad_request(
            "Upgrade request required: this fake serves exec over WebSocket only",
        ));
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.contains(p))
        .ok_or_else(|| {
            StatusError::bad_request(format!(
                "no supported subprotocol among {offered:?}: expected v5.channel.k8s.io or v4.channel.k8s.io"
            ))
        })
}

/// The command with its program found among those provided and every
/// argument under a mount path moved to the claim's directory.
fn local_command(
    command: &[String],
    volumes: &[(String, Backing)],
    mounts: &Mounts,
) -> Result<tokio::process::Command, StatusError> {
    let program = mounts.commands.get(&command[0]).ok_or_else(|| {
        StatusError::internal(format!(
            "exec: \"{}\": executable file not found in $PATH",
            command[0]
        ))
    })?;
    let mut local = tokio::process::Command::new(program);
    for arg in &command[1..] {
        let moved = volumes.iter().find_map(|(path, backing)| match backing {
            Backing::Dir(dir) => {
                let rest = arg.strip_prefix(path.as_str())?;
                (rest.is_empty() || rest.starts_with('/'))
                    .then(|| format!("{}{rest}", dir.display()))
            }
            Backing::Hostile(_) => None,
        });
        local.arg(moved.unwrap_or_else(|| arg.clone()));
    }
    local
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Ok(local)
}

enum Run {
    Process(tokio::process::Command),
    Hostile(Vec<u8>),
}

type Socket = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

impl Run {
    async fn serve(self, ws: Socket, command: Vec<String>) {
        let (mut sink, mut incoming) = ws.split();
        // Each output channel opens with an empty message.
        for channel in [STDOUT, STDERR, ERROR] {
            if sink.send(Message::binary(vec![channel])).await.is_err() {
                return;
            }
        }
        let mut child = match self {
            Run::Hostile(bytes) => {
                // As a process would: the answer comes once the request
                // (the first stdin frame) has come, not before the client
                // can read it.
                loop {
                    match incoming.next().await {
                        Some(Ok(Message::Binary(data))) if data.first() == Some(&STDIN) => break,
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return,
                    }
                }
                for piece in bytes.chunks(64 * 1024) {
                    let mut frame = vec![STDOUT];
                    frame.extend_from_slice(piece);
                    if sink.send(Message::binary(frame)).await.is_err() {
                        return;
                    }
                }
                let _ = sink.send(status(&command, Some(0))).await;
                let _ = sink.close().await;
                return;
            }
            Run::Process(mut local) => match local.spawn() {
                Ok(child) => child,
                Err(err) => {
                    let _ = sink
                        .send(Message::binary(
                            [&[ERROR][..], failure(&err.to_string(), None).as_bytes()].concat(),
                        ))
                        .await;
                    return;
                }
            },
        };
        let mut stdin = child.stdin.take();
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
        let pipes = [
            (
                STDOUT,
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
            (
                STDERR,
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ),
        ];
        for (channel, pipe) in pipes {
            let Some(mut pipe) = pipe else { continue };
            let tx = out_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = pipe.read(&mut buf).await {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(channel);
                    frame.extend_from_slice(&buf[..n]);
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(out_tx);
        let writer = tokio::spawn(async move {
            while let Some(frame) = out_rx.recv().await {
                if sink.send(Message::binary(frame)).await.is_err() {
                    return None;
                }
            }
            Some(sink)
        });
        // The client's stdin until it closes it, or the connection.
        let reader = async {
            while let Some(Ok(message)) = incoming.next().await {
                match message {
                    Message::Binary(data) => match data.first() {
                        Some(&STDIN) => {
                            if let Some(pipe) = &mut stdin
                                && pipe.write_all(&data[1..]).await.is_err()
                            {
                                stdin = None;
                            }
                        }
                        Some(&CLOSE) if data.get(1) == Some(&STDIN) => stdin = None,
                        _ => {}
                    },
                    Message::Close(_) => return false,
                    _ => {}
                }
            }
            false
        };
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = reader => None,
        };
        let Some(exited) = exited else {
            // The client went away: the process is killed (as the kubelet
            // ends an exec whose stream is gone).
            let _ = child.kill().await;
            return;
        };
        let code = exited.ok().and_then(|s| s.code());
        if let Ok(Some(mut sink)) = writer.await {
            let _ = sink.send(status(&command, code)).await;
            let _ = sink.close().await;
        }
    }
}

/// The exit status on the error channel, as the kubelet words it.
fn status(command: &[String], code: Option<i32>) -> Message {
    let body = match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}).to_string(),
        other => failure(&format!("error executing command {command:?}"), other),
    };
    Message::binary([&[ERROR][..], body.as_bytes()].concat())
}

fn failure(message: &str, code: Option<i32>) -> String {
    let code = code.unwrap_or(-1);
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: {message}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
    .to_string()
}
