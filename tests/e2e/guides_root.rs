//! Root by design from DHI's own guides, through the real kube-apiserver (issue 23,
//! point 2): the clamav guide's `runAsUser: 0` is admitted in enforce with the guide
//! cited; the same setting on an image whose guide does not prescribe it is denied.

use serde_json::json;

use super::cluster::{create, pods};
use super::webhook::setup;

#[tokio::test]
async fn guides_root_the_guide_prescribes_is_admitted_through_kube_apiserver() {
    let Some(env) = setup("guides-root", &[], &[]).await else {
        return;
    };
    let root = |name: &str, image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "agent", "image": image,
                "securityContext": {"runAsUser": 0}}]}})
    };
    let answer = create(
        &env.client,
        &pods(&env.ns),
        &root("clamav", "dhi.io/clamav:1.5"),
        true,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(
        answer.warnings.iter().any(|w| w.starts_with(
            "container \"agent\": runAsUser: 0 admitted as root by design, as the image's own \
             guide prescribes (image/clamav/guides.md:201 in DHI's catalog)"
        )),
        "{:?}",
        answer.warnings
    );
    let answer = create(
        &env.client,
        &pods(&env.ns),
        &root("nginx", "dhi.io/nginx:1.31"),
        true,
    )
    .await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(
        answer
            .message()
            .contains("[run-as-root] container \"agent\""),
        "{}",
        answer.message()
    );
}
