//! The invariants the fuzz targets assert, shared with `crates/dhi-policy/tests/policy/fuzz_regressions.rs`
//! (which includes this file by path), so a saved crash input is replayed by plain
//! `cargo test` on stable. Only the main crate's own dependencies are used here.
//!
//! Every check panics with a message naming the broken invariant.

#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt;

use base64::Engine as _;
use dhi_policy::answer;
use dhi_policy::glob::glob_match;
use dhi_policy::image_ref::{ImageField, ImageRef};
use dhi_policy::{
    Engine, Mode, PolicyFile, Scope, Subject, WARNING_CUT, WARNINGS_TOTAL, Webhook, WorkloadKind,
    decode_object,
};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

/// Policies the fuzz targets run the engine under (`admission_handle` picks one with
/// its first byte, `engine_pod` with its first field).
pub const POLICIES: &[&str] = &[
    "",
    "rewrite: {officialImages: true}",
    "rewrite: {officialImages: true, imagePullSecrets: [dhi-pull, other]}\ntemplates: {mutate: true}",
    "rewrite: {target: 'registry.example.com/platform/dhi-{repo}', officialImages: true}\ntemplates: {mutate: true}",
    "rewrite: {enabled: false}",
    "rules: {run-as-root: warn, privileged-port: off}\ntemplates: {mutate: true}",
    "exempt: {images: ['docker.io/library/busybox*', '*:3.13-dev']}\ntemplates: {mutate: true}",
    "catalog: {python: {allowRoot: true}, my-app: {uid: 10001}, nginx: {tags: {'1.31': {uid: 101, gid: 101}}}}\ntemplates: {mutate: true}",
];

/// Builds the engine for policy `i`.
pub fn engine(i: usize) -> Engine {
    Engine::new(PolicyFile::from_yaml(POLICIES[i % POLICIES.len()]).expect("built-in fuzz policy"))
}

/// Both webhooks in every mode.
pub const COMBOS: [(Webhook, Mode); 6] = [
    (Webhook::Mutate, Mode::Enforce),
    (Webhook::Mutate, Mode::Audit),
    (Webhook::Validate, Mode::Enforce),
    (Webhook::Validate, Mode::Audit),
    (Webhook::Mutate, Mode::Warn),
    (Webhook::Validate, Mode::Warn),
];

// ---------------------------------------------------------------------------------------
// JSON without duplicate keys
// ---------------------------------------------------------------------------------------

/// A JSON document that has no object with a repeated key. `serde_json::Value` keeps the
/// last of repeated keys while derived structs reject them, so invariants that compare
/// the two readings only hold for documents without repeats (kube-apiserver never sends
/// any: it serialises from its own typed objects).
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDupVisitor)
    }
}

struct NoDupVisitor;

impl<'de> Visitor<'de> for NoDupVisitor {
    type Value = NoDuplicateKeys;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
}

/// The body as a JSON value, if it is JSON without repeated keys.
pub fn parse_unique(body: &[u8]) -> Option<Value> {
    serde_json::from_slice::<NoDuplicateKeys>(body).ok()?;
    serde_json::from_slice(body).ok()
}

// ---------------------------------------------------------------------------------------
// answer::handle on raw bytes
// ---------------------------------------------------------------------------------------

/// Runs `body` through `answer::handle` for both webhooks and modes and checks
/// every answer.
pub fn check_admission_body(engine: &Engine, body: &[u8]) {
    let input = parse_unique(body);
    for (webhook, mode) in COMBOS {
        check_admission_once(engine, webhook, mode, body, input.as_ref());
    }
}

/// One webhook, one mode.
pub fn check_admission_once(
    engine: &Engine,
    webhook: Webhook,
    mode: Mode,
    body: &[u8],
    input: Option<&Value>,
) {
    let answer = answer::handle(engine, webhook, mode, body);
    let out: Value = serde_json::from_slice(&answer.body).expect("every answer body is JSON");
    let ctx = || format!("{webhook:?}/{mode:?}: answer {out}");
    let uid = input
        .and_then(|v| v.pointer("/request/uid"))
        .and_then(Value::as_str);
    let well_typed_header = input.is_some_and(|v| {
        v.get("apiVersion") == Some(&json!(answer::API_VERSION))
            && v.get("kind") == Some(&json!(answer::KIND))
    });
    match answer.status {
        200 => {
            assert_eq!(out["apiVersion"], answer::API_VERSION, "{}", ctx());
            assert_eq!(out["kind"], answer::KIND, "{}", ctx());
            let got = out["response"]["uid"].as_str();
            assert!(got.is_some(), "200 answer without response.uid: {}", ctx());
            if let Some(uid) = uid {
                assert_eq!(
                    got,
                    Some(uid),
                    "response.uid does not echo request.uid: {}",
                    ctx()
                );
            }
        }
        400 => {
            assert_eq!(out["kind"], "Status", "{}", ctx());
            assert_eq!(out["code"], 400, "{}", ctx());
            // With a well-formed header and a string uid, the answer must be a review.
            assert!(
                !(well_typed_header && uid.is_some()),
                "request with apiVersion {} kind {} and a string uid answered with a bare 400: {}",
                answer::API_VERSION,
                answer::KIND,
                ctx()
            );
        }
        other => panic!("unexpected HTTP status {other}: {}", ctx()),
    }
    if answer.status != 200 {
        return;
    }
    let response = &out["response"];
    let allowed = response["allowed"]
        .as_bool()
        .expect("response.allowed is a bool");
    let warnings: Vec<String> = response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w.as_str().expect("warnings are strings").to_owned())
        .collect();
    // What the webhook sends is what kube-apiserver passes on: ASCII, and past the total
    // already cut as the API server cuts.
    assert!(warnings.iter().all(|w| w.is_ascii()), "{warnings:?}");
    if warnings.iter().map(String::len).sum::<usize>() > WARNINGS_TOTAL {
        assert!(
            warnings.iter().all(|w| w.len() <= WARNING_CUT),
            "{warnings:?}"
        );
    }
    if !allowed {
        let code = response["status"]["code"].as_i64();
        assert!(
            matches!(code, Some(400 | 403)),
            "denial without status code: {}",
            ctx()
        );
        if code == Some(403) {
            // Policy denials: only the validating webhook, only in enforce mode.
            assert_eq!(
                (webhook, mode),
                (Webhook::Validate, Mode::Enforce),
                "policy denial: {}",
                ctx()
            );
            assert!(
                !answer.violations.is_empty(),
                "403 without violations: {}",
                ctx()
            );
        }
    } else if webhook == Webhook::Validate && mode == Mode::Enforce {
        assert!(
            answer.violations.is_empty(),
            "allowed with violations: {}",
            ctx()
        );
    }
    let Some(patch_b64) = response.get("patch") else {
        assert!(
            response.get("patchType").is_none(),
            "patchType without patch: {}",
            ctx()
        );
        return;
    };
    assert!(
        webhook == Webhook::Mutate && matches!(mode, Mode::Enforce | Mode::Warn),
        "only enforce/mutate and warn/mutate patch: {}",
        ctx()
    );
    assert!(allowed, "a patch on a denial: {}", ctx());
    assert_eq!(response["patchType"], "JSONPatch", "{}", ctx());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch_b64.as_str().expect("patch is a string"))
        .expect("patch is base64");
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is a JSON Patch");
    let Some(input) = input else {
        // A patch was computed from a body with repeated keys: the object the patch is
        // for is ambiguous, nothing more to check.
        return;
    };
    let object = input
        .pointer("/request/object")
        .expect("a patch answers a request with an object");
    let mut patched = object.clone();
    if let Err(err) = json_patch::patch(&mut patched, &ops) {
        panic!(
            "patch does not apply to request.object: {err}\npatch: {}\nobject: {object}",
            String::from_utf8_lossy(&bytes)
        );
    }
    // Re-run on the patched object: nothing more to patch, and the validating webhook
    // (which runs after all mutations) gives the same verdict as on the original.
    let mut again = input.clone();
    again["request"]["object"] = patched.clone();
    let again_body = serde_json::to_vec(&again).expect("serialises");
    let second = answer::handle(engine, Webhook::Mutate, mode, &again_body);
    let second_out: Value = serde_json::from_slice(&second.body).expect("JSON");
    assert!(
        second_out["response"].get("patch").is_none(),
        "mutation is not idempotent: second patch {:?}\nfirst patch: {}\npatched: {patched}",
        second_out["response"]["patch"]
            .as_str()
            .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        String::from_utf8_lossy(&bytes)
    );
    // Compared without the old object: an UPDATE whose patched object equals its old
    // object is (rightly) not judged again, which would make the two answers differ.
    let without_old = |mut review: Value| {
        if let Some(request) = review.get_mut("request").and_then(Value::as_object_mut) {
            request.remove("oldObject");
        }
        serde_json::to_vec(&review).expect("serialises")
    };
    let before_body = without_old(input.clone());
    let after_body = without_old(again);
    let before = answer::handle(engine, Webhook::Validate, Mode::Enforce, &before_body);
    let after = answer::handle(engine, Webhook::Validate, Mode::Enforce, &after_body);
    assert_eq!(
        before.violations,
        after.violations,
        "validating the patched object differs from validating the original\npatch: {}\nobject: {object}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        before.outcome, after.outcome,
        "validate outcome changed by the patch"
    );
}

/// An AdmissionReview around `object`.
pub fn review_body(
    kind: WorkloadKind,
    object: &Value,
    old_object: Option<&Value>,
    sub_resource: Option<&str>,
) -> Vec<u8> {
    let group = match kind {
        WorkloadKind::Pod | WorkloadKind::PodTemplate | WorkloadKind::ReplicationController => "",
        WorkloadKind::Job | WorkloadKind::CronJob => "batch",
        _ => "apps",
    };
    let mut request = json!({
        "uid": "00000000-0000-4000-8000-000000000000",
        "kind": {"group": group, "version": "v1", "kind": kind.as_str()},
        "name": "fuzz",
        "namespace": "default",
        "operation": if old_object.is_some() { "UPDATE" } else { "CREATE" },
        "object": object,
    });
    if let Some(old) = old_object {
        request["oldObject"] = old.clone();
    }
    if let Some(sub) = sub_resource {
        request["subResource"] = json!(sub);
    }
    serde_json::to_vec(&json!({
        "apiVersion": answer::API_VERSION,
        "kind": answer::KIND,
        "request": request,
    }))
    .expect("serialises")
}

// ---------------------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------------------

/// `ImageRef::parse` never panics, and what it prints reads back as the same reference.
pub fn check_image_ref(raw: &str) {
    let _ = ImageField::parse(raw);
    let Ok(parsed) = ImageRef::parse(raw) else {
        return;
    };
    let printed = parsed.to_string();
    match ImageRef::parse(&printed) {
        Ok(again) => assert_eq!(
            again, parsed,
            "{raw:?} printed as {printed:?} reads back differently"
        ),
        Err(err) => panic!("{raw:?} printed as {printed:?}, which does not parse: {err}"),
    }
    let _ = parsed.hardened_repo();
    let _ = parsed.location();
    let _ = parsed.name();
}

// ---------------------------------------------------------------------------------------
// Policy files
// ---------------------------------------------------------------------------------------

/// `PolicyFile::from_yaml` never panics; an accepted policy builds an engine whose
/// rewrites produce references the engine recognises as the hardened images named.
pub fn check_policy(text: &str) {
    let Ok(settings) = PolicyFile::from_yaml(text) else {
        return;
    };
    let engine = Engine::new(settings.clone());
    let rewriting = settings.rewrite.enabled;
    for mapping in settings.mappings().values().filter(|_| rewriting) {
        let target = settings.rewrite.target.render(&mapping.to);
        match ImageRef::parse(&target) {
            Ok(r) => assert_eq!(
                r.hardened_repo(),
                Some(mapping.to.as_str()),
                "accepted mapping {} -> {:?} rewrites to {target:?}, which is not recognised as the hardened repository",
                mapping.from,
                mapping.to
            ),
            Err(err) => panic!(
                "accepted mapping {} -> {:?} rewrites to {target:?}, which is not a valid image: {err}",
                mapping.from, mapping.to
            ),
        }
    }
    // A small pod through the engine with this policy, one container per mapping.
    let containers: Vec<Value> = settings
        .mappings()
        .keys()
        .take(8)
        .enumerate()
        .map(|(i, from)| json!({"name": format!("m{i}"), "image": format!("{from}:1.0")}))
        .chain([
            json!({"name": "py", "image": "dhi.io/python:3.13-dev"}),
            json!({"name": "ng", "image": "nginx:1"}),
        ])
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": containers}});
    check_engine_object(&engine, WorkloadKind::Pod, &pod);
}

// ---------------------------------------------------------------------------------------
// The engine on structured objects
// ---------------------------------------------------------------------------------------

/// The JSON Pointer tokens of `ptr` (RFC 6901 unescaped).
fn tokens(ptr: &str) -> Vec<String> {
    ptr.split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn is_null_or_absent(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_null)
}

/// Whether the engine may touch a container with this image: a hardened image, or an
/// upstream one the policy maps (a default/explicit mapping or a catalogued official
/// image), and not exempt.
pub fn may_touch(engine: &Engine, image: Option<&str>) -> bool {
    let Some(raw) = image else { return false };
    let Ok(ImageField::Ref(r)) = ImageField::parse(raw) else {
        return false;
    };
    let settings = engine.policy_file();
    if settings
        .exempt
        .images
        .iter()
        .any(|p| glob_match(p, &r.to_string()))
    {
        return false;
    }
    r.hardened_repo().is_some() || is_mapped(engine, &r)
}

fn is_mapped(engine: &Engine, r: &ImageRef) -> bool {
    let settings = engine.policy_file();
    if !settings.rewrite.enabled {
        return false;
    }
    let location = r.location();
    settings.mappings().contains_key(&location)
        || (settings.rewrite.official_images
            && location
                .strip_prefix("docker.io/library/")
                .is_some_and(|name| engine.catalog().contains(name)))
}

/// Checks one operation against the original object: it stays inside the pod spec,
/// adds only what is absent, and touches only hardened or mapped containers.
fn check_op(engine: &Engine, kind: WorkloadKind, object: &Value, op: &json_patch::PatchOperation) {
    let (opname, path, value) = match op {
        json_patch::PatchOperation::Add(a) => ("add", a.path.as_str().to_owned(), Some(&a.value)),
        json_patch::PatchOperation::Replace(r) => {
            ("replace", r.path.as_str().to_owned(), Some(&r.value))
        }
        other => panic!("unexpected operation {other:?}"),
    };
    let toks = tokens(&path);
    let prefix = kind.spec_path();
    assert!(
        toks.len() > prefix.len() && toks.iter().zip(prefix).all(|(a, b)| a == b),
        "{opname} {path} is outside the pod spec of a {kind}"
    );
    let spec_ptr: String = prefix.iter().map(|t| format!("/{t}")).collect();
    let spec = object
        .pointer(&spec_ptr)
        .expect("patched object has a pod spec");
    let rest: Vec<&str> = toks[prefix.len()..].iter().map(String::as_str).collect();
    match rest.as_slice() {
        ["securityContext"] => {
            assert_eq!(opname, "add");
            assert!(
                is_null_or_absent(spec.get("securityContext")),
                "{path} overwrites a pod securityContext"
            );
            assert!(
                value.and_then(|v| v.get("fsGroup")).is_some(),
                "{path}: {value:?}"
            );
        }
        ["securityContext", "fsGroup"] => {
            assert_eq!(opname, "add");
            assert!(
                is_null_or_absent(spec.pointer("/securityContext/fsGroup")),
                "{path} overwrites fsGroup"
            );
        }
        ["imagePullSecrets"] => {
            assert_eq!(opname, "add");
            assert!(
                is_null_or_absent(spec.get("imagePullSecrets")),
                "{path} overwrites imagePullSecrets"
            );
        }
        ["imagePullSecrets", "-"] => assert_eq!(opname, "add"),
        [
            list @ ("containers" | "initContainers" | "ephemeralContainers"),
            index,
            field @ ..,
        ] => {
            let index: usize = index
                .parse()
                .unwrap_or_else(|_| panic!("{path}: bad index"));
            let container = spec
                .get(*list)
                .and_then(|l| l.get(index))
                .unwrap_or_else(|| panic!("{path}: no such container"));
            let image = container.get("image").and_then(Value::as_str);
            assert!(
                may_touch(engine, image),
                "{opname} {path} touches container {:?} whose image {image:?} is neither hardened nor mapped (or is exempt)",
                container.get("name")
            );
            match field {
                ["image"] => {
                    assert_eq!(opname, "replace");
                    let r = ImageRef::parse(image.unwrap_or_default())
                        .expect("rewritten image was valid");
                    assert!(
                        r.hardened_repo().is_none(),
                        "{path}: rewrites an already hardened image"
                    );
                    assert!(
                        r.digest.is_none(),
                        "{path}: rewrites an image pinned by digest"
                    );
                }
                ["securityContext"] => {
                    assert_eq!(opname, "add");
                    assert!(
                        is_null_or_absent(container.get("securityContext")),
                        "{path} overwrites a container securityContext"
                    );
                    check_security_fields(&path, value.expect("add has a value"));
                }
                [
                    "securityContext",
                    key @ ("runAsUser" | "runAsGroup" | "runAsNonRoot"),
                ] => {
                    assert_eq!(opname, "add");
                    assert!(
                        is_null_or_absent(
                            container.get("securityContext").and_then(|s| s.get(*key))
                        ),
                        "{path} overwrites {key}"
                    );
                    check_security_fields(&path, &json!({*key: value.expect("add has a value")}));
                }
                other => panic!("{path}: unexpected container field {other:?}"),
            }
        }
        other => panic!("{path}: unexpected target {other:?}"),
    }
}

fn check_security_fields(path: &str, fields: &Value) {
    let map = fields
        .as_object()
        .unwrap_or_else(|| panic!("{path}: securityContext is not an object"));
    for (key, value) in map {
        match key.as_str() {
            // Never root; the group may be 0 when the catalog says so (gid 0 images).
            "runAsUser" => assert!(
                value.as_i64().is_some_and(|v| v > 0),
                "{path}: injects {key}: {value}"
            ),
            "runAsGroup" => assert!(
                value.as_i64().is_some_and(|v| v >= 0),
                "{path}: injects {key}: {value}"
            ),
            "runAsNonRoot" => assert_eq!(value, &json!(true), "{path}"),
            other => panic!("{path}: injects unexpected {other}"),
        }
    }
}

fn subject<'o, 'a>(kind: WorkloadKind, object: &'o dhi_policy::ObjectView<'a>) -> Subject<'o, 'a> {
    Subject {
        kind,
        object,
        old_object: None,
        scope: Scope::All,
    }
}

/// The engine's invariants on one object of one kind.
pub fn check_engine_object(engine: &Engine, kind: WorkloadKind, object: &Value) {
    let text = object.to_string();
    let view = decode_object(&text)
        .unwrap_or_else(|e| panic!("generated object does not decode: {e}\n{text}"));
    let eval = engine.evaluate(&subject(kind, &view));

    for op in &eval.patch {
        check_op(engine, kind, object, op);
    }
    let mut patched = object.clone();
    if let Err(err) = json_patch::patch(&mut patched, &eval.patch) {
        panic!(
            "patch does not apply: {err}\npatch: {}\nobject: {text}",
            serde_json::to_string(&eval.patch).unwrap_or_default()
        );
    }
    let patched_text = patched.to_string();
    let patched_view = decode_object(&patched_text).expect("patched object decodes");
    let again = engine.evaluate(&subject(kind, &patched_view));
    assert!(
        again.patch.is_empty(),
        "mutation is not idempotent\nfirst: {}\nsecond: {}\nobject: {text}",
        serde_json::to_string(&eval.patch).unwrap_or_default(),
        serde_json::to_string(&again.patch).unwrap_or_default()
    );
    assert_eq!(
        eval.violations,
        again.violations,
        "validating the patched object differs from validating the original\npatch: {}\nobject: {text}",
        serde_json::to_string(&eval.patch).unwrap_or_default()
    );

    // Webhook and mode on top of the evaluation.
    let mutates = !kind.is_template() || engine.policy_file().templates.mutate;
    for (webhook, mode) in COMBOS {
        let d = engine.review(&subject(kind, &view), webhook, mode);
        match (webhook, mode) {
            (Webhook::Mutate, Mode::Enforce | Mode::Warn) => {
                assert!(d.allowed);
                let expected = if mutates {
                    eval.patch.clone()
                } else {
                    Vec::new()
                };
                assert_eq!(
                    d.patch, expected,
                    "enforce/mutate patch is not the evaluation's"
                );
            }
            (Webhook::Mutate, Mode::Audit) => assert!(d.allowed && d.patch.is_empty()),
            (Webhook::Validate, Mode::Enforce) => {
                assert_eq!(d.allowed, eval.violations.is_empty());
                assert_eq!(d.violations, eval.violations);
                assert!(d.patch.is_empty());
            }
            (Webhook::Validate, Mode::Audit | Mode::Warn) => {
                assert!(d.allowed && d.patch.is_empty());
                assert_eq!(d.violations, eval.violations);
            }
        }
        // (Warnings are kept whole here; `as_api_server_sends` cuts them, checked there.)
        // An UPDATE that leaves the pod spec as it was is not judged again.
        let same = Subject {
            old_object: Some(&view),
            ..subject(kind, &view)
        };
        let d = engine.review(&same, webhook, mode);
        assert!(d.allowed && d.patch.is_empty() && d.violations.is_empty());
    }
    // The ephemeral-containers subresource judges ephemeral containers only.
    let eph = engine.evaluate(&Subject {
        scope: Scope::EphemeralOnly,
        ..subject(kind, &view)
    });
    let eph_names: Vec<&str> = kind
        .pod_spec(&view)
        .and_then(|s| s.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.name.as_ref())
        .collect();
    for v in &eph.violations {
        assert!(
            eph_names.contains(&v.container.as_str()),
            "ephemeral scope judged {:?}",
            v.container
        );
        assert!(
            eval.violations.contains(v),
            "ephemeral scope found {v:?} that the full scope did not"
        );
    }

    // And the same object through the whole admission path.
    check_admission_body(engine, &review_body(kind, object, None, None));
}
