//! Reading the deploy files for the checks in `tests/`: YAML as JSON values, the containers of
//! a Cloud Run service or a Kubernetes Pod, the settings a binary accepts, and validation
//! against the vendored JSON schemas (`deploy/schemas/`, see its SOURCES.md).
#![allow(clippy::unwrap_used)] // test support: a failure should panic loudly

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
pub use test_support::workspace_root;

/// A file of the workspace, by its path from the root.
pub fn path(relative: &str) -> PathBuf {
    workspace_root().join(relative)
}

/// Every YAML document in `relative`, as JSON values.
pub fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path(relative))
        .unwrap_or_else(|error| panic!("reading {relative}: {error}"));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|error| panic!("{relative} is not valid YAML: {error}"))
        .into_iter()
        .filter(|document| !document.is_null())
        .collect()
}

/// The single YAML document in `relative`.
pub fn yaml(relative: &str) -> Value {
    let mut documents = yaml_documents(relative);
    assert_eq!(documents.len(), 1, "{relative} holds one document");
    documents.remove(0)
}

/// Renders service.yaml with `deploy/render-service.sh` (as Cloud Build does) into `out` and
/// returns the rendered text. `images` is `(agent, mcp-sidecar)`; `None` leaves them bare.
pub fn render_service(out: &Path, project: &str, images: Option<(&str, &str)>) -> String {
    let mut command = Command::new("bash");
    command
        .arg(path("deploy/render-service.sh"))
        .arg(path("service.yaml"))
        .arg(out)
        .env("PROJECT_ID", project)
        .env("SERVICE", "mcp-agent");
    if let Some((agent, sidecar)) = images {
        command
            .env("AGENT_IMAGE", agent)
            .env("SIDECAR_IMAGE", sidecar);
    }
    let status = command.status().unwrap();
    assert!(status.success(), "deploy/render-service.sh failed");
    std::fs::read_to_string(out).unwrap()
}

/// Renders workerpool.yaml with `deploy/render-service.sh` as Cloud Build does (only the
/// sidecar image is given: the pool has no agent) and returns the rendered text.
pub fn render_worker_pool(out: &Path, project: &str, sidecar_image: &str) -> String {
    let status = Command::new("bash")
        .arg(path("deploy/render-service.sh"))
        .arg(path("workerpool.yaml"))
        .arg(out)
        .env("PROJECT_ID", project)
        .env("SERVICE", "mcp-agent")
        .env_remove("AGENT_IMAGE")
        .env("SIDECAR_IMAGE", sidecar_image)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "deploy/render-service.sh workerpool.yaml failed"
    );
    std::fs::read_to_string(out).unwrap()
}

/// Validation errors of `instance` against the schema file `schema` (empty when valid).
/// `pointer` selects a subschema (e.g. `/$defs/Container`); "" validates against the root.
pub fn schema_errors(schema: &str, pointer: &str, instance: &Value) -> Vec<String> {
    let text = std::fs::read_to_string(path(&format!("deploy/schemas/{schema}"))).unwrap();
    let mut schema: Value = serde_json::from_str(&text).unwrap();
    if !pointer.is_empty() {
        // Validate against one definition, keeping every definition it may refer to.
        let definitions = schema.get("$defs").cloned().unwrap_or_default();
        schema = serde_json::json!({
            "$schema": schema["$schema"],
            "$ref": format!("#{pointer}"),
            "$defs": definitions,
        });
    }
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

/// Validation errors of `instance` against the schema `root` of a Google API discovery document
/// (`deploy/schemas/{document}`, e.g. the Cloud Run Admin API v1's), empty when valid.
///
/// A discovery document describes each message as a JSON-Schema-like object; it is read here as
/// JSON Schema: every `schemas` entry becomes a definition, `"$ref": "Name"` a reference to it,
/// `"type": "any"` no constraint, and every message with `properties` refuses any other field,
/// as gcloud does when it turns a YAML file into the API message (`DictToMessageWithErrorCheck`
/// in `gcloud run worker-pools replace`), so a misspelt field fails here and not at deploy.
pub fn discovery_schema_errors(document: &str, root: &str, instance: &Value) -> Vec<String> {
    let text = std::fs::read_to_string(path(&format!("deploy/schemas/{document}"))).unwrap();
    let discovery: Value = serde_json::from_str(&text).unwrap();
    let definitions: serde_json::Map<String, Value> = discovery["schemas"]
        .as_object()
        .unwrap_or_else(|| panic!("{document} has no `schemas`: not a discovery document"))
        .iter()
        .map(|(name, message)| (name.clone(), discovery_to_json_schema(message)))
        .collect();
    assert!(
        definitions.contains_key(root),
        "{document} has no schema {root}"
    );
    let schema = serde_json::json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$ref": format!("#/definitions/{root}"),
        "definitions": definitions,
    });
    let validator = jsonschema::validator_for(&schema).unwrap();
    validator
        .iter_errors(instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect()
}

/// One discovery schema node as JSON Schema (only the keywords that constrain a value).
fn discovery_to_json_schema(node: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(reference) = node["$ref"].as_str() {
        out.insert("$ref".into(), format!("#/definitions/{reference}").into());
        return Value::Object(out);
    }
    if let Some(kind) = node["type"].as_str()
        && kind != "any"
    {
        out.insert("type".into(), kind.into());
    }
    if let Some(values) = node.get("enum") {
        out.insert("enum".into(), values.clone());
    }
    if let Some(properties) = node["properties"].as_object() {
        let properties: serde_json::Map<String, Value> = properties
            .iter()
            .map(|(name, property)| (name.clone(), discovery_to_json_schema(property)))
            .collect();
        out.insert("properties".into(), properties.into());
        out.insert("additionalProperties".into(), false.into());
    }
    if let Some(items) = node.get("items") {
        out.insert("items".into(), discovery_to_json_schema(items));
    }
    if let Some(values) = node.get("additionalProperties") {
        out.insert(
            "additionalProperties".into(),
            discovery_to_json_schema(values),
        );
    }
    Value::Object(out)
}

/// The containers of a Cloud Run service, a Deployment or a Pod, native sidecars
/// (`initContainers` with `restartPolicy: Always`) included.
pub fn containers(resource: &Value) -> Vec<Value> {
    let spec = if resource["spec"]["template"]["spec"].is_object() {
        &resource["spec"]["template"]["spec"]
    } else {
        &resource["spec"]
    };
    let sidecars = spec["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|container| container["restartPolicy"] == "Always");
    sidecars
        .chain(spec["containers"].as_array().into_iter().flatten())
        .cloned()
        .collect()
}

pub fn container<'a>(containers: &'a [Value], name: &str) -> &'a Value {
    containers
        .iter()
        .find(|container| container["name"] == name)
        .unwrap_or_else(|| panic!("no container `{name}`"))
}

/// The names of a container's env entries.
pub fn env_names(container: &Value) -> BTreeSet<String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["name"].as_str().map(str::to_owned))
        .collect()
}

/// The plain values of a container's env (entries from secrets are left out).
pub fn env_values(container: &Value) -> Vec<(String, String)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            Some((
                entry["name"].as_str()?.to_owned(),
                entry["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The environment variables a binary documents in `--help` (`[env: NAME=…]`).
pub fn accepted_env(binary: &Path) -> BTreeSet<String> {
    let output = Command::new(binary).arg("--help").output().unwrap();
    assert!(output.status.success(), "{} --help", binary.display());
    String::from_utf8_lossy(&output.stdout)
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect()
}

/// The `cargo build …` command a Dockerfile runs, as its words.
pub fn dockerfile_cargo_build(relative: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path(relative)).unwrap();
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("RUN cargo build"))
        .unwrap_or_else(|| panic!("{relative} has a `RUN cargo build` line"));
    line.trim_start_matches("RUN ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}
