//! `idagent k8s manifest`, judged as a cluster would judge it: the real binary's output is
//! read back by a real YAML parser (PyYAML) and every object is checked against the
//! Kubernetes API schemas by `kubernetes-validate --strict` (installed by
//! `scripts/host-setup.sh test`). The SandboxTemplate is a CRD the validator does not know:
//! its own shape is checked here and its `spec.podTemplate` is validated as a Pod.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

mod common;
use common::{idagent, output_text};
/// Debian's Python, where host-setup.sh installs kubernetes-validate (and its PyYAML).
const PYTHON: &str = "/usr/bin/python3";
/// The Kubernetes version the objects are validated against: native sidecars
/// (`restartPolicy: Always` on an init container) are on by default since 1.29.
const K8S_VERSION: &str = "1.31.0";
const KEY: &str = "sk-test-k8s-manifest-do-not-print";

const POLICY: &str = "version: 1
mode: enforce
network:
  rules:
    - host: api.openai.com
      port: 443
      protocol: https
      http:
        - method: POST
          path: /v1/chat/completions
    - host: 192.0.2.7
      port: 8080
      protocol: tcp
exec:
  rules:
    - path: /usr/bin/node
files:
  rules:
    - path: /tmp/workspace
      kind: dir
      allow: [create_file]
";

/// The YAML stream's documents, as PyYAML reads them.
fn parse(dir: &Path, yaml: &str) -> Vec<Value> {
    let file = dir.join("manifest.yaml");
    std::fs::write(&file, yaml).expect("write manifest");
    let out = Command::new(PYTHON)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(&file)
        .output()
        .expect("start python3");
    assert!(
        out.status.success(),
        "PyYAML cannot read it\n{}",
        output_text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Runs kubernetes-validate --strict on `docs` (JSON is YAML); Ok or its report.
fn validate(dir: &Path, docs: &[Value]) -> Result<(), String> {
    let file = dir.join("validate.yaml");
    let stream: String = docs.iter().map(|d| format!("---\n{d}\n")).collect();
    std::fs::write(&file, stream).expect("write");
    let out = Command::new(PYTHON)
        .args(["-m", "kubernetes_validate", "--strict", "-k", K8S_VERSION])
        .arg(&file)
        .output()
        .expect("start python3");
    let report = output_text(&out);
    assert!(
        !report.contains("No module named kubernetes_validate"),
        "kubernetes-validate is not installed: run scripts/host-setup.sh test\n{report}"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(report)
    }
}

/// The SandboxTemplate's shape (the CRD of kubernetes-sigs/agent-sandbox), then its pod as a
/// Pod document the validator knows.
fn sandbox_template_as_pod(doc: &Value) -> Result<Value, String> {
    if doc["apiVersion"] != "extensions.agents.x-k8s.io/v1alpha1" {
        return Err(format!("apiVersion {}", doc["apiVersion"]));
    }
    if !doc["metadata"]["name"].is_string() {
        return Err("no metadata.name".into());
    }
    let template = &doc["spec"]["podTemplate"];
    if !template["spec"].is_object() {
        return Err("no spec.podTemplate.spec".into());
    }
    let np = &doc["spec"]["networkPolicy"];
    if !np["egress"].is_array() || np["ingress"] != json!([]) {
        return Err(format!("spec.networkPolicy {np}"));
    }
    let allowed = [
        "podTemplate",
        "networkPolicy",
        "networkPolicyManagement",
        "volumeClaimTemplates",
        "envVarsInjectionPolicy",
        "service",
    ];
    for key in doc["spec"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        if !allowed.contains(&key.as_str()) {
            return Err(format!("unknown SandboxTemplate field spec.{key}"));
        }
    }
    let mut metadata = template["metadata"].clone();
    metadata["name"] = doc["metadata"]["name"].clone();
    Ok(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}))
}

fn pod_spec_of(doc: &Value) -> &Value {
    match doc["kind"].as_str() {
        Some("Pod") => &doc["spec"],
        Some("Job") => &doc["spec"]["template"]["spec"],
        Some("SandboxTemplate") => &doc["spec"]["podTemplate"]["spec"],
        other => panic!("not a pod carrier: {other:?}"),
    }
}

#[test]
fn every_kind_is_valid_kubernetes_and_keeps_the_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("write policy");
    let policy = policy.display().to_string();
    let env = format!("OPENAI_API_KEY={KEY}");
    for (kind, carrier) in [
        ("sandbox-template", "SandboxTemplate"),
        ("pod", "Pod"),
        ("job", "Job"),
    ] {
        let out = idagent(&[
            "k8s",
            "manifest",
            "--kind",
            kind,
            "--namespace",
            "agents",
            "--runtime-class",
            "kata",
            "--timeout",
            "2m",
            "--env",
            &env,
            "--upstream-map",
            "api.openai.com=127.0.0.1:8443",
            "--policy",
            &policy,
            "--mode",
            "enforce",
            "victims/node-openai",
        ]);
        assert_eq!(out.status.code(), Some(0), "{kind}\n{}", output_text(&out));
        let yaml = String::from_utf8(out.stdout.clone()).expect("utf-8");
        assert!(!yaml.contains(KEY), "{kind}: the key is in clear\n{yaml}");
        let docs = parse(dir.path(), &yaml);
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            ["Secret", "ConfigMap", "NetworkPolicy", carrier],
            "{kind}"
        );
        for d in &docs {
            assert_eq!(d["metadata"]["namespace"], "agents", "{kind}: {d}");
        }

        // What the validator knows as it is; the SandboxTemplate's pod as a Pod.
        let mut to_validate: Vec<Value> = docs[..3].to_vec();
        let last = &docs[3];
        to_validate.push(if carrier == "SandboxTemplate" {
            sandbox_template_as_pod(last).unwrap_or_else(|e| panic!("{kind}: {e}"))
        } else {
            last.clone()
        });
        validate(dir.path(), &to_validate).unwrap_or_else(|e| panic!("{kind}: invalid\n{e}"));

        // The contract of src/pod.rs, read back from the parsed YAML.
        let pod = pod_spec_of(last);
        assert_eq!(pod["shareProcessNamespace"], false, "{kind}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{kind}");
        assert_eq!(pod["runtimeClassName"], "kata", "{kind}");
        assert_eq!(pod["restartPolicy"], "Never", "{kind}");
        let inits: Vec<&str> = pod["initContainers"]
            .as_array()
            .expect("inits")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(
            inits,
            ["idagent-install", "idagent-net-init", "idagent-proxy"],
            "{kind}"
        );
        let proxy = &pod["initContainers"][2];
        assert_eq!(proxy["restartPolicy"], "Always", "{kind}");
        let proxy_cmd: Vec<&str> = proxy["command"]
            .as_array()
            .expect("cmd")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for want in [
            "--policy",
            "/idagent/config/policy.yaml",
            "--mode-file",
            "--upstream-map-file",
        ] {
            assert!(proxy_cmd.contains(&want), "{kind}: {proxy_cmd:?}");
        }
        assert_eq!(
            proxy_cmd[proxy_cmd.len() - 3..],
            ["--", "node", "/opt/victims/node-openai/index.js"],
            "{kind}"
        );
        let agent = &pod["containers"][0];
        assert_eq!(agent["command"][0], "/.idagent/bin/idagent", "{kind}");
        assert_eq!(agent["command"][3], "--ctl", "{kind}");
        let key_env = agent["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == "OPENAI_API_KEY")
            .expect("key env");
        assert_eq!(
            key_env["valueFrom"]["secretKeyRef"]["name"], docs[0]["metadata"]["name"],
            "{kind}"
        );
        assert_eq!(agent["securityContext"]["runAsUser"], 65534, "{kind}");

        // The ConfigMap holds the files the proxy is pointed at.
        let data = &docs[1]["data"];
        assert_eq!(data["policy.yaml"], POLICY, "{kind}");
        assert_eq!(data["mode"], "enforce", "{kind}");
        assert!(
            data["upstream-map.txt"]
                .as_str()
                .is_some_and(|m| m.contains("api.openai.com=127.0.0.1:8443")),
            "{kind}: {data}"
        );

        // The wall: the map target exactly, the literal address exactly, 443 for the name,
        // DNS; nothing open.
        let egress = docs[2]["spec"]["egress"].to_string();
        for want in [
            "127.0.0.1/32",
            "192.0.2.7/32",
            "\"port\":443",
            "\"port\":53",
        ] {
            assert!(egress.contains(want), "{kind}: {want} not in {egress}");
        }
        assert_ne!(docs[2]["spec"]["egress"], json!([{}]), "{kind}");
        assert_eq!(docs[2]["spec"]["ingress"], json!([]), "{kind}");

        match carrier {
            "Job" => {
                assert_eq!(last["spec"]["backoffLimit"], 0);
                assert_eq!(last["spec"]["activeDeadlineSeconds"], 120);
            }
            _ => assert_eq!(pod["activeDeadlineSeconds"], 120, "{kind}"),
        }
        if carrier == "SandboxTemplate" {
            assert_eq!(
                last["spec"]["networkPolicy"]["egress"],
                docs[2]["spec"]["egress"]
            );
        }
    }
}

#[test]
fn the_validator_rejects_a_broken_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x"}, "data": {"a": "b"}});
    validate(dir.path(), std::slice::from_ref(&good)).expect("a good ConfigMap passes");
    let mut broken = good.clone();
    broken["spec"] = json!({"colour": "blue"});
    assert!(
        validate(dir.path(), &[broken]).is_err(),
        "unknown field passed"
    );
    let mut wrong = good;
    wrong["data"] = json!({"a": 7});
    assert!(
        validate(dir.path(), &[wrong]).is_err(),
        "non-string data passed"
    );
    // And the SandboxTemplate shape check itself refuses a template without a pod.
    let st = json!({"apiVersion": "extensions.agents.x-k8s.io/v1alpha1", "kind": "SandboxTemplate",
        "metadata": {"name": "x"}, "spec": {"networkPolicy": {"ingress": [], "egress": []}}});
    assert!(sandbox_template_as_pod(&st).is_err());
}

#[test]
fn offline_without_a_policy_reaches_only_the_map_targets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = idagent(&[
        "k8s",
        "manifest",
        "--kind",
        "pod",
        "--offline",
        "--upstream-map",
        "api.openai.com=127.0.0.1:8443",
        "victims/node-openai",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let docs = parse(dir.path(), &String::from_utf8_lossy(&out.stdout));
    let np = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy")
        .expect("networkpolicy");
    assert_eq!(
        np["spec"]["egress"],
        json!([{"to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}],
                "ports": [{"protocol": "TCP", "port": 8443}, {"protocol": "UDP", "port": 8443}]}])
    );
    // No --env, no Secret; the proxy is told it is offline.
    assert!(docs.iter().all(|d| d["kind"] != "Secret"));
    let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("pod");
    let proxy_cmd = pod["spec"]["initContainers"][2]["command"].to_string();
    assert!(proxy_cmd.contains("\"--offline\""), "{proxy_cmd}");
    validate(dir.path(), &docs).expect("valid");
}

#[test]
fn the_proxy_uid_is_refused_in_one_line() {
    for user in ["7700", "7700:7700", "0"] {
        let out = idagent(&["k8s", "manifest", "--user", user, "victims/node-openai"]);
        assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
        assert!(out.stdout.is_empty(), "{}", output_text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("idagent: error: --user {user}: uid ")),
            "{err}"
        );
    }
}
