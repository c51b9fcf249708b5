//! The `Containerfile` and `deploy/` agree: each workload runs a binary
//! the image puts on its PATH under that name (and the workspace builds
//! under that name), as the user the image runs as, on ports the image
//! exposes; the images' final stages are the ones the README builds.
//! (No container engine runs here: this is checked from the files.)

use std::collections::BTreeSet;
use std::path::Path;

use serde_yaml_ng::Value;

struct Stage {
    name: String,
    copied: Vec<String>,
    user: Option<String>,
    exposed: BTreeSet<u64>,
    entrypoint: Option<String>,
}

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The stages of the Containerfile, with what the checks need of each.
fn stages() -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for line in read("Containerfile").lines().map(str::trim) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instruction {
            "FROM" => {
                let name = rest.rsplit_once(" AS ").map_or("", |(_, n)| n).trim();
                stages.push(Stage {
                    name: name.to_owned(),
                    copied: Vec::new(),
                    user: None,
                    exposed: BTreeSet::new(),
                    entrypoint: None,
                });
            }
            "COPY" => {
                let stage = stages.last_mut().expect("COPY after FROM");
                stage
                    .copied
                    .extend(rest.split_whitespace().last().map(str::to_owned));
            }
            "USER" => stages.last_mut().expect("USER after FROM").user = Some(rest.to_owned()),
            "EXPOSE" => stages
                .last_mut()
                .expect("EXPOSE after FROM")
                .exposed
                .extend(rest.split_whitespace().map(|p| p.parse::<u64>().unwrap())),
            "ENTRYPOINT" => {
                let list: Vec<String> =
                    serde_json::from_str(rest).expect("ENTRYPOINT in exec form");
                stages.last_mut().unwrap().entrypoint = list.first().cloned();
            }
            _ => {}
        }
    }
    stages
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The binaries a crate's manifest declares (the `name` of each `[[bin]]`).
fn binaries(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in read(manifest).lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start().trim_start_matches('=').trim();
            names.push(value.trim_matches('"').to_owned());
        }
    }
    names
}

#[test]
fn the_images_run_what_deploy_expects() {
    let stages = stages();
    for (workload, stage_name, manifest) in [
        (
            "deploy/coordinator/deployment.yaml",
            "coordinator",
            "coordinator/Cargo.toml",
        ),
        ("deploy/agent/daemonset.yaml", "agent", "agent/Cargo.toml"),
    ] {
        let stage = stages
            .iter()
            .find(|s| s.name == stage_name)
            .unwrap_or_else(|| panic!("a stage {stage_name} in the Containerfile"));
        let pod = &yaml(workload)["spec"]["template"]["spec"];
        let container = &pod["containers"][0];

        // The binary: built by the workspace, on the image's PATH, run by deploy/.
        let command = container["command"][0].as_str().expect("a command");
        assert!(
            binaries(manifest).iter().any(|b| b == command),
            "{manifest} builds no binary {command}"
        );
        assert_eq!(
            stage.copied,
            [format!("/usr/local/bin/{command}")],
            "{stage_name} puts {command} on the PATH"
        );
        assert_eq!(stage.entrypoint.as_deref(), Some(command));
        assert!(
            read("Containerfile").contains(&format!("--bin {command}")),
            "the build stage builds {command}"
        );

        // The user.
        let uid = pod["securityContext"]["runAsUser"]
            .as_u64()
            .expect("runAsUser");
        let gid = pod["securityContext"]["runAsGroup"]
            .as_u64()
            .expect("runAsGroup");
        assert_eq!(stage.user.as_deref(), Some(format!("{uid}:{gid}").as_str()));
        assert_eq!(uid, 65532, "non-root");
        assert_eq!(
            container["securityContext"]["readOnlyRootFilesystem"],
            Value::Bool(true),
            "{workload}"
        );

        // The ports.
        let ports: BTreeSet<u64> = container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        assert_eq!(
            ports, stage.exposed,
            "{workload} and the {stage_name} image"
        );
    }
}

#[test]
fn the_coordinator_runs_as_three_replicas_that_a_drain_keeps_two_of() {
    let deployment = yaml("deploy/coordinator/deployment.yaml");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3));
    let budget = yaml("deploy/coordinator/poddisruptionbudget.yaml");
    assert_eq!(budget["spec"]["minAvailable"].as_u64(), Some(2));
    // The agents reach every replica through the headless Service.
    let replicas = yaml("deploy/coordinator/service-replicas.yaml");
    assert_eq!(replicas["spec"]["clusterIP"].as_str(), Some("None"));
}

/// Whether `rules` (a NetworkPolicy's `ingress` or `egress`) let the
/// coordinator's own pods through on `port`, under `peers` (`from`/`to`).
fn lets_coordinators_through(rules: &Value, peers: &str, port: u64) -> bool {
    rules.as_sequence().into_iter().flatten().any(|rule| {
        let from_coordinators = rule[peers].as_sequence().into_iter().flatten().any(|peer| {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"].as_str()
                == Some("knowton-coordinator")
                && peer.get("namespaceSelector").is_none()
        });
        let on_port = rule["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|p| p["port"].as_u64() == Some(port));
        from_coordinators && on_port
    })
}

/// A replica that does not lead passes resolve and acknowledge on to the
/// leader's REST API: the coordinators' NetworkPolicy must let them reach
/// each other there, both ways.
#[test]
fn the_replicas_may_reach_each_others_api() {
    let deployment = yaml("deploy/coordinator/deployment.yaml");
    let http = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .and_then(|p| p["containerPort"].as_u64())
        .expect("an http port");
    let policy = yaml("deploy/network/coordinator.yaml");
    assert!(lets_coordinators_through(
        &policy["spec"]["ingress"],
        "from",
        http
    ));
    assert!(lets_coordinators_through(
        &policy["spec"]["egress"],
        "to",
        http
    ));
}
