//! Property tests over generated pods: the engine's patches apply, are idempotent,
//! touch only hardened (or rewritten) containers, rewrite only to tags the catalog lists
//! (unless `rewrite.tags: any`), validating the fixed object gives the verdict the engine
//! gave the original, and the webhook, `check` and `--fix` agree.

use dhi_policy::image_ref::ImageRef;
use dhi_policy::policy_file::TagCheck;
use dhi_policy::{Engine, GroupKind, Mode, PolicyFile, Request, Webhook, WorkloadKind};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::strategies::{self, IMAGES, security_context};
use crate::support::{Ask, admit, nest};

fn container(name: String) -> impl Strategy<Value = Value> {
    strategies::container(
        name,
        prop::sample::select(IMAGES).prop_map(|image| Some(image.to_owned())),
        security_context(),
        &[80, 443, 8080, 15090],
    )
}

fn pod_spec() -> impl Strategy<Value = Value> {
    (
        strategies::pod_spec(container),
        security_context(),
        prop::option::of(prop::sample::select(&["0", "80", "1024"][..])),
        any::<bool>(),
        prop::option::of(Just(vec![json!({"name": "dhi-pull"})])),
    )
        .prop_map(|(mut spec, ctx, sysctl, host_network, secrets)| {
            let mut ctx = ctx.unwrap_or_else(|| json!({}));
            if let Some(start) = sysctl {
                ctx["sysctls"] =
                    json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": start}]);
            }
            if ctx.as_object().is_some_and(|m| !m.is_empty()) {
                spec["securityContext"] = ctx;
            }
            if host_network {
                spec["hostNetwork"] = json!(true);
            }
            if let Some(s) = secrets {
                spec["imagePullSecrets"] = json!(s);
            }
            spec
        })
}

fn engines() -> Vec<Engine> {
    vec![
        Engine::default(),
        Engine::new(
            PolicyFile::from_yaml(
                "rewrite:\n  target: registry.example.com/platform/dhi-{repo}\n  officialImages: true\n  imagePullSecrets: [dhi-pull, extra]\n",
            )
            .unwrap(),
        ),
        Engine::new(
            PolicyFile::from_yaml("rewrite:\n  officialImages: true\n  tags: any\n").unwrap(),
        ),
        Engine::new(PolicyFile::from_yaml("templates: {mutate: true}").unwrap()),
    ]
}

/// The validating webhook's verdict: allowed, and the sorted (rule, container) pairs.
fn verdict(engine: &Engine, kind: WorkloadKind, object: &Value) -> (bool, Vec<(String, String)>) {
    let d = Ask::of(kind, object).review(engine, Webhook::Validate, Mode::Enforce);
    (d.allowed, rules_of(&d.violations))
}

/// Which of [`engines`], and a generated object of a kind.
fn case() -> impl Strategy<Value = (usize, WorkloadKind, Value)> {
    (
        0usize..4,
        prop::sample::select(&WorkloadKind::ALL[..]),
        pod_spec(),
    )
        .prop_map(|(which, kind, spec)| (which, kind, wrap(kind, spec)))
}

fn wrap(kind: WorkloadKind, spec: Value) -> Value {
    let mut object = nest(kind, spec);
    object["metadata"] = json!({"name": "generated"});
    object
}

fn is_hardened(image: &str) -> bool {
    ImageRef::parse(image)
        .ok()
        .and_then(|r| r.hardened_repo().map(|_| ()))
        .is_some()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn patches_apply_are_idempotent_and_preserve_the_verdict(
        (which, kind, object) in case(),
    ) {
        let engine = &engines()[which];
        let eval = Ask::of(kind, &object).evaluate(engine);
        let mut fixed = object.clone();
        json_patch::patch(&mut fixed, &eval.patch).expect("the patch applies to its input");

        // Idempotent: the fixed object needs nothing more.
        let again = Ask::of(kind, &fixed).evaluate(engine);
        prop_assert!(again.patch.is_empty(), "second patch: {:?}", again.patch);

        // Only hardened containers are touched: every container path in the patch
        // names a container whose image is hardened once patched.
        let prefix = format!("/{}", kind.spec_path().join("/"));
        for op in serde_json::to_value(&eval.patch).unwrap().as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            let rest = path.strip_prefix(&prefix).expect("patch stays inside the pod spec");
            let mut parts = rest.trim_start_matches('/').split('/');
            let field = parts.next().unwrap();
            if matches!(field, "containers" | "initContainers" | "ephemeralContainers") {
                let index: usize = parts.next().unwrap().parse().unwrap();
                let spec_ptr = format!("{prefix}/{field}/{index}/image");
                let image = fixed.pointer(&spec_ptr).and_then(Value::as_str).unwrap();
                prop_assert!(is_hardened(image), "{path} touches non-hardened {image}");
                // A rewrite points at a tag the catalog lists, unless the policy opts out.
                if op["op"] == "replace" && path.ends_with("/image")
                    && engine.policy_file().rewrite.tags == TagCheck::Catalog
                {
                    let r = ImageRef::parse(image).unwrap();
                    let repo = r.hardened_repo().unwrap();
                    prop_assert!(
                        engine.catalog().has_tag(repo, r.tag_or_latest()),
                        "{path}: {image} is not in the catalog"
                    );
                }
            } else {
                prop_assert!(matches!(field, "securityContext" | "imagePullSecrets"), "unexpected {path}");
            }
        }

        // Validating the fixed object agrees with validating the original.
        prop_assert_eq!(verdict(engine, kind, &object), verdict(engine, kind, &fixed));
    }
}

/// The webhook's answer, as the server reads a request (objects kept raw).
fn webhook(
    engine: &Engine,
    webhook: Webhook,
    kind: WorkloadKind,
    object: &Value,
) -> dhi_policy::Decision {
    let request = json!({"uid": "u", "kind": {"group": kind.group(), "version": "v1", "kind": kind.as_str()},
        "operation": "CREATE", "namespace": "default", "object": object});
    admit(engine, webhook, Mode::Enforce, &request)
}

/// `check`'s answer, as it reads a manifest (objects as values).
fn check(engine: &Engine, kind: WorkloadKind, object: &Value) -> dhi_policy::Finding {
    let request = Request::create(GroupKind::from(kind), Some("default"), object);
    engine.find(Mode::Enforce, request).unwrap()
}

fn rules_of(violations: &[dhi_policy::Violation]) -> Vec<(String, String)> {
    let mut v: Vec<_> = violations
        .iter()
        .map(|v| (v.rule.to_string(), v.container.clone()))
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn check_the_webhook_and_fix_agree(
        (which, kind, object) in case(),
    ) {
        let engine = &engines()[which];
        let found = check(engine, kind, &object);
        let validated = webhook(engine, Webhook::Validate, kind, &object);
        let mutated = webhook(engine, Webhook::Mutate, kind, &object);

        // Same verdict, same violations, same warnings (check merges both webhooks').
        prop_assert_eq!(found.allowed, validated.allowed && mutated.allowed);
        prop_assert_eq!(rules_of(&found.violations), rules_of(&validated.violations));
        for w in validated.warnings.iter().chain(&mutated.warnings) {
            prop_assert!(found.warnings.contains(w), "check lacks {w}");
        }
        prop_assert_eq!(found.warnings.len(), {
            let mut all: Vec<&String> = validated.warnings.iter().chain(&mutated.warnings).collect();
            all.sort();
            all.dedup();
            all.len()
        });

        // Same patch: the webhook's for pods (and templates when it patches them); for
        // templates it does not patch, the one their pods will get.
        let patches_templates = engine.policy_file().templates.mutate;
        if kind == WorkloadKind::Pod || patches_templates {
            prop_assert_eq!(
                serde_json::to_value(&found.patch).unwrap(),
                serde_json::to_value(&mutated.patch).unwrap()
            );
        } else {
            prop_assert!(mutated.patch.is_empty());
            prop_assert_eq!(
                serde_json::to_value(&found.patch).unwrap(),
                serde_json::to_value(&Ask::of(kind, &object).evaluate(engine).patch).unwrap()
            );
        }

        // --fix: the patched object needs nothing more, and is judged as the original.
        let mut fixed = object.clone();
        json_patch::patch(&mut fixed, &found.patch).expect("the patch applies");
        let refound = check(engine, kind, &fixed);
        prop_assert!(refound.patch.is_empty(), "after --fix: {:?}", refound.patch);
        prop_assert_eq!(refound.allowed, found.allowed);
        prop_assert_eq!(rules_of(&refound.violations), rules_of(&found.violations));
    }
}
