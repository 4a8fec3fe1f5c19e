//! The deploy files, checked against their JSON schemas and against the rules the schemas
//! cannot express: what Cloud Run accepts, what the local loop must mirror, and what the two
//! binaries actually accept.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use deploy_checks::{
    accepted_env, container, containers, discovery_schema_errors, dockerfile_cargo_build,
    env_names, schema_errors, yaml, yaml_documents,
};
use serde_json::Value;

fn service() -> Value {
    yaml("service.yaml")
}

fn worker_pool() -> Value {
    yaml("workerpool.yaml")
}

/// The Cloud Run Admin API v1 discovery document (Google's machine-readable schema of every
/// v1 resource, WorkerPool included; see deploy/schemas/SOURCES.md).
const CLOUD_RUN_V1_DISCOVERY: &str = "cloud-run-v1.discovery.json";

fn template_annotations(service: &Value) -> BTreeMap<String, String> {
    service["spec"]["template"]["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// The local loop's Pod: the one-replica `mcp-agent` Deployment in deploy/local/pod.yaml.
fn local_pod() -> Value {
    local_deployment("deploy/local/pod.yaml", "mcp-agent")
}

/// The local worker pool (skaffold profile `worker-pool`): the render-worker Deployment.
const LOCAL_WORKER: &str = "deploy/local/worker-pool/render-worker.yaml";

fn local_deployment(file: &str, name: &str) -> Value {
    yaml_documents(file)
        .into_iter()
        .find(|document| document["kind"] == "Deployment" && document["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{file} has the {name} Deployment"))
}

#[test]
fn service_cloudbuild_and_skaffold_files_validate_against_their_schemas() {
    for (file, schema) in [
        ("service.yaml", "cloud-run-v1.schemastore.json"),
        ("cloudbuild.yaml", "cloudbuild.schemastore.json"),
        ("skaffold.yaml", "skaffold-v4beta14.json"),
    ] {
        let errors = schema_errors(schema, "", &yaml(file));
        assert!(errors.is_empty(), "{file}:\n{}", errors.join("\n"));
    }
    // The skaffold schema does not pin its version.
    assert_eq!(yaml("skaffold.yaml")["apiVersion"], "skaffold/v4beta14");
    assert_eq!(service()["apiVersion"], "serving.knative.dev/v1");
    assert_eq!(service()["kind"], "Service");
}

#[test]
fn the_local_manifests_validate_against_the_kubernetes_schemas() {
    // Strictly (unknown fields refused), with the schemas the PyPI package kubernetes-validate
    // ships, for a Kubernetes version local clusters run (native sidecars need >= 1.29).
    for file in ["deploy/local/pod.yaml", LOCAL_WORKER] {
        let output = std::process::Command::new(test_support::installed_tool(
            "venv/bin/kubernetes-validate",
        ))
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .arg(deploy_checks::path(file))
        .output()
        .unwrap();
        let report = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{report}");
        assert_eq!(
            report.matches("passed").count(),
            yaml_documents(file).len(),
            "{report}"
        );
    }
    // The app containers also fit Cloud Run's container schema, as they must mirror it.
    let local_worker = local_deployment(LOCAL_WORKER, "mcp-render-worker");
    for container in containers(&local_pod())
        .iter()
        .chain(containers(&local_worker).iter())
        .filter(|c| c["name"] != "otel-collector")
    {
        let mut container = container.clone();
        // Kubernetes-only fields Cloud Run's schema does not have.
        if let Some(fields) = container.as_object_mut() {
            fields.remove("readinessProbe");
            fields.remove("restartPolicy");
        }
        let errors = schema_errors(
            "cloud-run-v1.schemastore.json",
            "/$defs/Container",
            &container,
        );
        assert!(
            errors.is_empty(),
            "{}: {}",
            container["name"],
            errors.join("\n")
        );
    }
}

#[test]
fn the_local_collector_config_is_the_same_in_the_configmap_and_for_compose() {
    let config_map = yaml_documents("deploy/local/pod.yaml")
        .into_iter()
        .find(|document| document["kind"] == "ConfigMap")
        .unwrap();
    let in_cluster = config_map["data"]["config.yaml"].as_str().unwrap();
    let for_compose =
        std::fs::read_to_string(deploy_checks::path("deploy/local/otel-collector.yaml")).unwrap();
    assert_eq!(in_cluster.trim(), for_compose.trim());
    for file in [
        "deploy/local/otel-collector.yaml",
        "deploy/otel-collector.yaml",
    ] {
        let config = yaml(file);
        let http = &config["receivers"]["otlp"]["protocols"]["http"]["endpoint"];
        assert!(
            http.as_str().unwrap().ends_with(":4318"),
            "{file}: OTLP/HTTP on 4318, where the binaries send"
        );
        assert!(
            config["service"]["pipelines"]["traces"].is_object(),
            "{file}: traces"
        );
        assert!(
            config["service"]["pipelines"]["metrics"].is_object(),
            "{file}: metrics"
        );
    }
    let production = yaml("deploy/otel-collector.yaml");
    let exporters = production["service"]["pipelines"]["traces"]["exporters"].to_string();
    assert!(
        exporters.contains("googlecloud"),
        "traces go to Cloud Trace: {exporters}"
    );
}

#[test]
fn the_service_follows_cloud_runs_multi_container_rules() {
    let service = service();
    let containers = containers(&service);
    let names: BTreeSet<String> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains("agent") && names.contains("mcp-sidecar"),
        "{names:?}"
    );

    // Exactly one container receives requests: the agent, on 8080.
    let with_ports: Vec<&Value> = containers
        .iter()
        .filter(|c| c.get("ports").is_some())
        .collect();
    assert_eq!(with_ports.len(), 1, "exactly one container has ports");
    assert_eq!(with_ports[0]["name"], "agent");
    assert_eq!(with_ports[0]["ports"][0]["containerPort"], 8080);

    // Every container the dependency annotation names exists and has a startup probe.
    let annotations = template_annotations(&service);
    let dependencies: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&annotations["run.googleapis.com/container-dependencies"]).unwrap();
    assert!(
        dependencies["agent"].contains(&"mcp-sidecar".to_owned()),
        "{dependencies:?}"
    );
    for (dependent, needs) in &dependencies {
        for name in std::iter::once(dependent).chain(needs) {
            let container = container(&containers, name);
            assert!(
                container.get("startupProbe").is_some(),
                "{name} has a startup probe"
            );
        }
    }
    for container in &containers {
        assert!(
            container.get("startupProbe").is_some(),
            "{}: startup probe",
            container["name"]
        );
        assert!(
            container["livenessProbe"].get("tcpSocket").is_none(),
            "{}: Cloud Run rejects TCP liveness probes",
            container["name"]
        );
        let limits = &container["resources"]["limits"];
        assert!(
            limits["cpu"].is_string() && limits["memory"].is_string(),
            "{}: limits",
            container["name"]
        );
    }

    // Background render jobs need CPU after the response, on the second generation runtime.
    assert_eq!(annotations["run.googleapis.com/cpu-throttling"], "false");
    assert_eq!(
        annotations["run.googleapis.com/execution-environment"],
        "gen2"
    );
    assert!(
        annotations.contains_key("run.googleapis.com/network-interfaces"),
        "Direct VPC egress"
    );
    assert!(service["spec"]["template"]["spec"]["serviceAccountName"].is_string());

    // PORT is Cloud Run's to set.
    for container in &containers {
        assert!(
            !env_names(container).contains("PORT"),
            "{}: PORT is reserved",
            container["name"]
        );
    }

    // The sidecar listens on loopback 3000, and reaches Redis through a secret.
    let sidecar = container(&containers, "mcp-sidecar");
    let env = sidecar["env"].as_array().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(value("MCP_LISTEN_ADDR")["value"], "127.0.0.1:3000");
    assert!(
        value("REDIS_URL")["valueFrom"]["secretKeyRef"]["name"].is_string(),
        "REDIS_URL from Secret Manager"
    );
    assert_eq!(value("ARTIFACT_STORE")["value"], "gcs");
    assert!(value("GCS_BUCKET")["value"].is_string());
    assert_eq!(sidecar["startupProbe"]["httpGet"]["port"], 3000);
    let agent = container(&containers, "agent");
    let agent_env = agent["env"].as_array().unwrap();
    let mcp_url = agent_env
        .iter()
        .find(|e| e["name"] == "MCP_SERVER_URL")
        .unwrap();
    assert_eq!(mcp_url["value"], "http://127.0.0.1:3000/mcp");
}

/// Image references in the service: the bare names skaffold and Cloud Build replace.
fn image_placeholders(resource: &Value) -> BTreeSet<String> {
    containers(resource)
        .iter()
        .filter_map(|c| c["image"].as_str())
        .filter(|image| !image.contains('/'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn skaffold_artifacts_and_cloud_build_images_are_the_services_placeholders() {
    let placeholders = image_placeholders(&service());
    assert_eq!(
        placeholders,
        BTreeSet::from(["agent".to_owned(), "mcp-sidecar".to_owned()])
    );
    let skaffold = yaml("skaffold.yaml");
    let artifacts: BTreeSet<String> = skaffold["build"]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|artifact| artifact["image"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        artifacts, placeholders,
        "skaffold builds exactly the placeholders"
    );
    for artifact in skaffold["build"]["artifacts"].as_array().unwrap() {
        let image = artifact["image"].as_str().unwrap();
        assert_eq!(
            artifact["docker"]["dockerfile"],
            format!("{image}/Dockerfile")
        );
    }
    assert_eq!(
        image_placeholders(&local_pod()),
        placeholders,
        "the local Pod uses them too"
    );
    // Cloud Build builds each placeholder's Dockerfile, renders and replaces the service.
    let cloudbuild = std::fs::read_to_string(deploy_checks::path("cloudbuild.yaml")).unwrap();
    for image in &placeholders {
        assert!(
            cloudbuild.contains(&format!("-f {image}/Dockerfile")),
            "cloudbuild builds {image}"
        );
    }
    assert!(cloudbuild.contains("deploy/render-service.sh"));
    assert!(cloudbuild.contains("gcloud run services replace"));
    assert!(cloudbuild.contains(".ci/run"), "cloudbuild runs the tests");
}

#[test]
fn rendering_pins_both_images_by_digest_and_leaves_no_placeholder() {
    let out = test_support::temp_dir("rendered").join("service.yaml");
    let registry = "us-central1-docker.pkg.dev/test-project/mcp-agent";
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (agent, sidecar) = (
        format!("{registry}/agent@{digest}"),
        format!("{registry}/mcp-sidecar@{digest}"),
    );
    let text = deploy_checks::render_service(&out, "test-project", Some((&agent, &sidecar)));
    assert!(!text.contains("${"), "no placeholder left");
    let rendered: Value = serde_saphyr::from_str(&text).unwrap();
    let errors = schema_errors("cloud-run-v1.schemastore.json", "", &rendered);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(rendered["metadata"]["name"], "mcp-agent");
    let rendered_containers = containers(&rendered);
    for name in ["agent", "mcp-sidecar"] {
        assert_eq!(
            container(&rendered_containers, name)["image"],
            format!("{registry}/{name}@{digest}")
        );
    }
    assert!(image_placeholders(&rendered).is_empty());
}

/// Settings of one artifact store only: Cloud Run uses the gcs store (GCS_BUCKET), the local
/// loop the local store (ARTIFACT_DIR, PUBLIC_BASE_URL). Every other name must match.
const STORE_SPECIFIC: [&str; 4] = [
    "GCS_BUCKET",
    "GCS_ENDPOINT",
    "ARTIFACT_DIR",
    "PUBLIC_BASE_URL",
];

#[test]
fn the_local_pod_mirrors_the_services_containers_env_ports_and_probes() {
    let service = containers(&service());
    let local = containers(&local_pod());
    let names = |containers: &[Value]| -> BTreeSet<String> {
        containers
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&local), names(&service), "same containers");
    for deployed in &service {
        let name = deployed["name"].as_str().unwrap();
        let mirrored = container(&local, name);
        let shared = |names: BTreeSet<String>| -> BTreeSet<String> {
            names
                .into_iter()
                .filter(|name| !STORE_SPECIFIC.contains(&name.as_str()))
                .collect()
        };
        assert_eq!(
            shared(env_names(mirrored)),
            shared(env_names(deployed)),
            "{name}: env names"
        );
        assert_eq!(
            mirrored.get("ports"),
            deployed.get("ports"),
            "{name}: ports"
        );
        for probe in ["startupProbe", "livenessProbe"] {
            assert_eq!(
                mirrored[probe]["httpGet"], deployed[probe]["httpGet"],
                "{name}: {probe}"
            );
        }
    }
}

/// Variables every binary honours that are not its own settings.
fn standard(name: &str) -> bool {
    name.starts_with("OTEL_")
        || [
            "RUST_LOG",
            "GOOGLE_CLOUD_PROJECT",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GCE_METADATA_HOST",
        ]
        .contains(&name)
}

#[test]
fn every_env_name_in_the_deploy_files_is_a_setting_the_binary_accepts() {
    let binaries = [
        ("agent", test_support::process::workspace_binary("agent")),
        (
            "mcp-sidecar",
            test_support::process::workspace_binary("mcp-sidecar"),
        ),
    ];
    let mut sources: Vec<(String, Vec<Value>)> = vec![
        ("service.yaml".into(), containers(&service())),
        ("deploy/local/pod.yaml".into(), containers(&local_pod())),
        ("workerpool.yaml".into(), containers(&worker_pool())),
        (
            LOCAL_WORKER.into(),
            containers(&local_deployment(LOCAL_WORKER, "mcp-render-worker")),
        ),
    ];
    // compose.yaml: services with environment maps.
    let compose = yaml("compose.yaml");
    let compose_containers = compose["services"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, service)| {
            let env: Vec<Value> = match &service["environment"] {
                Value::Object(map) => map
                    .keys()
                    .map(|key| serde_json::json!({"name": key}))
                    .collect(),
                Value::Array(list) => list
                    .iter()
                    .filter_map(|entry| entry.as_str())
                    .map(|entry| serde_json::json!({"name": entry.split('=').next().unwrap()}))
                    .collect(),
                _ => vec![],
            };
            serde_json::json!({"name": name, "env": env})
        })
        .collect();
    sources.push(("compose.yaml".into(), compose_containers));

    // Which binary a container runs: its own name, or the worker role of the sidecar.
    fn binary_of(container: &str) -> Option<&str> {
        match container {
            "render-worker" => Some("mcp-sidecar"),
            "agent" | "mcp-sidecar" => Some(container),
            _ => None,
        }
    }
    for (binary_name, binary) in &binaries {
        let accepted = accepted_env(binary);
        assert!(
            accepted.len() > 5,
            "{binary_name} --help lists its settings"
        );
        for (file, containers) in &sources {
            // The worker pools run the sidecar alone; every other file runs both binaries.
            let worker_pool = file == "workerpool.yaml" || file == LOCAL_WORKER;
            assert!(
                worker_pool || containers.iter().any(|c| c["name"] == *binary_name),
                "{file} has no {binary_name} container"
            );
            let runs_it = containers
                .iter()
                .filter(|c| binary_of(c["name"].as_str().unwrap_or_default()) == Some(binary_name));
            for container in runs_it {
                for name in env_names(container) {
                    assert!(
                        accepted.contains(&name) || standard(&name) || name == "PORT",
                        "{file} ({}): {binary_name} does not accept {name} (its --help lists \
                         {accepted:?})",
                        container["name"]
                    );
                }
            }
        }
    }
}

#[test]
fn the_dockerfiles_build_the_binaries_with_the_command_the_tests_use() {
    for binary in ["agent", "mcp-sidecar"] {
        let command = dockerfile_cargo_build(&format!("{binary}/Dockerfile"));
        assert_eq!(
            command,
            deploy_checks_release_command(binary),
            "{binary}/Dockerfile builds with the checked command"
        );
        let dockerfile =
            std::fs::read_to_string(deploy_checks::path(&format!("{binary}/Dockerfile"))).unwrap();
        assert!(
            dockerfile.contains("distroless"),
            "{binary}: minimal runtime image"
        );
        assert!(dockerfile.contains("USER nonroot"), "{binary}: non-root");
        assert!(
            dockerfile.contains("cargo chef cook"),
            "{binary}: dependency layer cached apart"
        );
    }
    let ignored = std::fs::read_to_string(deploy_checks::path(".dockerignore")).unwrap();
    for entry in ["target/", ".tools/", ".git/", "*.pem", ".env"] {
        assert!(ignored.contains(entry), ".dockerignore keeps {entry} out");
    }
}

/// The release build command (also what `tests/it/release_binaries.rs` runs).
fn deploy_checks_release_command(binary: &str) -> Vec<String> {
    [
        "cargo",
        "build",
        "--release",
        "--locked",
        "-p",
        binary,
        "--bin",
        binary,
    ]
    .iter()
    .map(|word| (*word).to_owned())
    .collect()
}

#[test]
fn the_worker_pool_validates_against_cloud_runs_v1_discovery_schema() {
    let pool = worker_pool();
    let errors = discovery_schema_errors(CLOUD_RUN_V1_DISCOVERY, "WorkerPool", &pool);
    assert!(errors.is_empty(), "workerpool.yaml:\n{}", errors.join("\n"));
    // The discovery document describes the fields, not these two values.
    assert_eq!(pool["apiVersion"], "run.googleapis.com/v1");
    assert_eq!(pool["kind"], "WorkerPool");
    // gcloud's own check (`worker-pools replace`): spec.template is required.
    assert!(pool["spec"]["template"]["spec"]["containers"].is_array());

    // The check is strict: a misspelt field fails here, as it would in gcloud.
    let mut misspelt = pool.clone();
    misspelt["spec"]["template"]["spec"]["containers"][0]["enviroment"] = serde_json::json!([]);
    let errors = discovery_schema_errors(CLOUD_RUN_V1_DISCOVERY, "WorkerPool", &misspelt);
    assert!(
        errors.iter().any(|error| error.contains("enviroment")),
        "{errors:?}"
    );
    // And the same reading of the document accepts the service too (a sanity check of it).
    let errors = discovery_schema_errors(CLOUD_RUN_V1_DISCOVERY, "Service", &service());
    assert!(errors.is_empty(), "service.yaml:\n{}", errors.join("\n"));
}

#[test]
fn the_worker_pool_runs_the_sidecar_as_a_worker_on_the_services_queue_and_bucket() {
    let pool = worker_pool();
    let pool_containers = containers(&pool);
    let worker = container(&pool_containers, "mcp-sidecar");
    let service_containers = containers(&service());
    let sidecar = container(&service_containers, "mcp-sidecar");
    let env = |container: &Value, name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no {name}", container["name"]))
    };

    // The sidecar image, in the worker role, with render workers.
    assert_eq!(
        worker["image"], "mcp-sidecar",
        "the placeholder Cloud Build pins"
    );
    assert_eq!(env(worker, "SIDECAR_ROLE")["value"], "worker");
    let workers: u32 = env(worker, "RENDER_WORKERS")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        workers >= 1,
        "a worker with no render workers would do nothing"
    );

    // One queue, one lease, one bucket: what both consumers of the queue must agree on.
    for name in [
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "JOB_LEASE",
        "JOB_MAX_ATTEMPTS",
        "JOB_TTL",
        "RENDER_TIMEOUT",
        "ARTIFACT_STORE",
        "GCS_BUCKET",
        "ARTIFACT_UPLOAD_ATTEMPTS",
        "SHUTDOWN_GRACE",
        "LOG_FORMAT",
        "GOOGLE_CLOUD_PROJECT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert_eq!(env(worker, name), env(sidecar, name), "{name}");
    }
    assert_eq!(
        pool["metadata"]["namespace"],
        service()["metadata"]["namespace"]
    );
    assert_eq!(
        pool["spec"]["template"]["spec"]["serviceAccountName"],
        service()["spec"]["template"]["spec"]["serviceAccountName"]
    );

    // No endpoint: no container has ports, and the worker has no probe (it listens on nothing).
    for container in &pool_containers {
        assert!(
            container.get("ports").is_none(),
            "{}: ports",
            container["name"]
        );
        assert!(
            container["livenessProbe"].get("tcpSocket").is_none(),
            "{}: Cloud Run rejects TCP liveness probes",
            container["name"]
        );
    }
    assert!(worker.get("startupProbe").is_none() && worker.get("livenessProbe").is_none());
    // Every container a dependency names has a startup probe (Cloud Run's rule).
    let annotations = &pool["spec"]["template"]["metadata"]["annotations"];
    let dependencies: BTreeMap<String, Vec<String>> = serde_json::from_str(
        annotations["run.googleapis.com/container-dependencies"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    for needed in dependencies.values().flatten() {
        assert!(
            container(&pool_containers, needed)
                .get("startupProbe")
                .is_some(),
            "{needed}: startup probe"
        );
    }
    // The instance count is set, as a number.
    let count = pool["metadata"]["annotations"]["run.googleapis.com/manualInstanceCount"]
        .as_str()
        .unwrap();
    assert!(count.parse::<u32>().is_ok(), "manualInstanceCount {count}");
}

#[test]
fn rendering_the_worker_pool_pins_the_sidecar_by_digest_and_leaves_no_placeholder() {
    let out = test_support::temp_dir("rendered").join("workerpool.yaml");
    let image = format!(
        "us-central1-docker.pkg.dev/test-project/mcp-agent/mcp-sidecar@sha256:{}",
        "cd".repeat(32)
    );
    let text = deploy_checks::render_worker_pool(&out, "test-project", &image);
    assert!(!text.contains("${"), "no placeholder left");
    let rendered: Value = serde_saphyr::from_str(&text).unwrap();
    let errors = discovery_schema_errors(CLOUD_RUN_V1_DISCOVERY, "WorkerPool", &rendered);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert_eq!(rendered["metadata"]["name"], "mcp-agent-render-worker");
    assert_eq!(rendered["metadata"]["namespace"], "test-project");
    let rendered_containers = containers(&rendered);
    assert_eq!(
        container(&rendered_containers, "mcp-sidecar")["image"],
        image
    );
    assert!(image_placeholders(&rendered).is_empty());
}

#[test]
fn cloud_build_can_deploy_the_worker_pool_and_compose_mirrors_it() {
    let cloudbuild = yaml("cloudbuild.yaml");
    let steps = cloudbuild["steps"].as_array().unwrap();
    let step = |id: &str| {
        steps
            .iter()
            .find(|step| step["id"] == id)
            .unwrap_or_else(|| panic!("cloudbuild.yaml has no step {id}"))
    };
    let render = step("render")["script"].as_str().unwrap();
    assert!(
        render.contains("deploy/render-service.sh workerpool.yaml"),
        "the render step renders the pool too:\n{render}"
    );
    let deploy = step("deploy-worker-pool");
    let script = deploy["script"].as_str().unwrap();
    assert!(
        script.contains("gcloud run worker-pools replace"),
        "{script}"
    );
    assert!(script.contains("_DEPLOY_WORKER_POOL"), "opt-in: {script}");
    assert_eq!(deploy["waitFor"], serde_json::json!(["render"]));
    assert_eq!(
        cloudbuild["substitutions"]["_DEPLOY_WORKER_POOL"], "false",
        "no pool unless asked for"
    );

    // compose: a render-worker in the worker role on the same Redis, prefix and artifacts.
    let compose = yaml("compose.yaml");
    let worker = &compose["services"]["render-worker"];
    let sidecar = &compose["services"]["mcp-sidecar"];
    assert_eq!(worker["environment"]["SIDECAR_ROLE"], "worker");
    for name in [
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "ARTIFACT_STORE",
        "ARTIFACT_DIR",
        "JOB_LEASE",
    ] {
        assert_eq!(
            worker["environment"][name], sidecar["environment"][name],
            "compose render-worker: {name}"
        );
    }
    assert_eq!(worker["build"], sidecar["build"], "the same image");
    assert_eq!(
        worker["volumes"], sidecar["volumes"],
        "the same artifacts volume"
    );
    assert!(worker.get("ports").is_none(), "nothing to publish");
}

#[test]
fn the_skaffold_worker_pool_profile_mirrors_the_worker_pool_and_leaves_the_default_alone() {
    // The profile renders the overlay instead of pod.yaml, never both; the default is untouched.
    let skaffold = yaml("skaffold.yaml");
    assert_eq!(
        skaffold["manifests"]["rawYaml"],
        serde_json::json!(["deploy/local/pod.yaml"]),
        "the default loop applies the Pod as it is"
    );
    let profile = skaffold["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|profile| profile["name"] == "worker-pool")
        .expect("skaffold.yaml has a worker-pool profile");
    let kustomize = &profile["manifests"]["kustomize"];
    assert_eq!(
        kustomize["paths"],
        serde_json::json!(["deploy/local/worker-pool"])
    );
    assert_eq!(
        kustomize["buildArgs"],
        serde_json::json!(["--load-restrictor=LoadRestrictionsNone"]),
        "the overlay reads ../pod.yaml"
    );
    assert!(
        profile["patches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|patch| patch["op"] == "remove" && patch["path"] == "/manifests/rawYaml"),
        "profiles merge: the base rawYaml must go"
    );
    assert!(profile.get("build").is_none() && profile.get("deploy").is_none());

    // The overlay: the default Pod plus the worker, and one patch.
    let overlay = yaml("deploy/local/worker-pool/kustomization.yaml");
    assert_eq!(
        overlay["resources"],
        serde_json::json!(["../pod.yaml", "render-worker.yaml"])
    );
    let patch = yaml("deploy/local/worker-pool/shared-artifacts.yaml");
    assert_eq!(
        overlay["patches"],
        serde_json::json!([{"path": "shared-artifacts.yaml"}])
    );
    assert_eq!(patch["kind"], "Deployment");
    assert_eq!(patch["metadata"]["name"], "mcp-agent");

    // The worker: the sidecar image in the worker role, on the Pod's queue and artifact store.
    let worker_deployment = local_deployment(LOCAL_WORKER, "mcp-render-worker");
    let worker_containers = containers(&worker_deployment);
    assert_eq!(worker_containers.len(), 1);
    let worker = container(&worker_containers, "mcp-sidecar");
    let pod_containers = containers(&local_pod());
    let sidecar = container(&pod_containers, "mcp-sidecar");
    assert_eq!(
        worker["image"], sidecar["image"],
        "the image skaffold builds"
    );
    let env = |container: &Value, name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|entry| entry["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no {name}", container["name"]))
    };
    assert_eq!(env(worker, "SIDECAR_ROLE")["value"], "worker");
    for name in [
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "JOB_LEASE",
        "JOB_MAX_ATTEMPTS",
        "JOB_TTL",
        "RENDER_TIMEOUT",
        "ARTIFACT_STORE",
        "ARTIFACT_DIR",
        "ARTIFACT_UPLOAD_ATTEMPTS",
        "SHUTDOWN_GRACE",
    ] {
        assert_eq!(env(worker, name), env(sidecar, name), "{name}");
    }
    assert!(worker.get("ports").is_none(), "it listens on nothing");
    assert!(worker.get("startupProbe").is_none() && worker.get("livenessProbe").is_none());

    // One artifact directory: both Pods mount the same claim where ARTIFACT_DIR points.
    let mount = |container: &Value| {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|mount| mount["name"] == "artifacts")
            .unwrap()["mountPath"]
            .clone()
    };
    assert_eq!(mount(worker), mount(sidecar));
    assert_eq!(mount(worker), env(worker, "ARTIFACT_DIR")["value"]);
    let claim_of = |pod_spec: &Value| {
        pod_spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|volume| volume["name"] == "artifacts")
            .unwrap()["persistentVolumeClaim"]["claimName"]
            .clone()
    };
    let claim = claim_of(&worker_deployment["spec"]["template"]["spec"]);
    assert_eq!(claim_of(&patch["spec"]["template"]["spec"]), claim);
    assert!(
        yaml_documents(LOCAL_WORKER)
            .iter()
            .any(|document| document["kind"] == "PersistentVolumeClaim"
                && document["metadata"]["name"] == claim),
        "the overlay defines the claim {claim}"
    );
    // The patch swaps the volume's source: the emptyDir is deleted, not left next to the claim.
    let patched_volume = &patch["spec"]["template"]["spec"]["volumes"][0];
    assert!(patched_volume["emptyDir"].is_null() && patched_volume.get("emptyDir").is_some());
}
