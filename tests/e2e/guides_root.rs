//! Root by design from DHI's own guides, through the real kube-apiserver (issue 23,
//! point 2): the clamav guide's `runAsUser: 0` is admitted in enforce with the guide
//! cited; the same setting on an image whose guide does not prescribe it is denied.

use serde_json::json;

use super::cluster::pod;
use super::webhook::setup;

#[tokio::test]
async fn guides_root_the_guide_prescribes_is_admitted_through_kube_apiserver() {
    let Some(env) = setup("guides-root", &[], &[]).await else {
        return;
    };
    let root = |name: &str, image: &str| {
        let agent = json!({"name": "agent", "image": image, "securityContext": {"runAsUser": 0}});
        pod(name, json!([agent]))
    };
    let answer = env
        .create_pod(&root("clamav", "dhi.io/clamav:1.5"), true)
        .await;
    answer.assert_status(201).assert_warning(|w| {
        w.starts_with(
            "container \"agent\": runAsUser: 0 admitted as root by design, as the image's own \
             guide prescribes (image/clamav/guides.md:201 in DHI's catalog)",
        )
    });
    let answer = env
        .create_pod(&root("nginx", "dhi.io/nginx:1.31"), true)
        .await;
    answer
        .assert_status(403)
        .assert_message(|m| m.contains("[run-as-root] container \"agent\""));
}
