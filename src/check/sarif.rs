//! The report as SARIF 2.1.0, for code-scanning UIs (GitHub code scanning, GitLab,
//! Azure DevOps): each violation and warning is a result on a line of its file.
//!
//! Rules are the engine's [`RuleId`]s, plus `dhi-warning` for the warnings no rule
//! raises (images the catalog does not list, rewrites left undone, dev variants).
//! Violations are `error`s; warnings, audit-mode findings included, are `warning`s.
//! Input that could not be checked is a tool execution notification, and the
//! invocation then did not succeed.

use std::io::{self, Write};
use std::path::Path;

use serde_json::{Value, json};

use super::locate::{Locator, Place};
use super::objects::Candidate;
use super::origin::{Origin, Source};
use super::report::{Entry, Report};
use dhi_policy::RuleId;

/// The SARIF version written, and its schema.
const VERSION: &str = "2.1.0";
const SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";
const INFORMATION_URI: &str = "https://github.com/dhi-admission/dhi-admission";

/// The rule of warnings that no engine rule raises.
const WARNING_RULE: &str = "dhi-warning";

/// A rule of the report: its id, name and help.
struct Rule {
    id: &'static str,
    name: &'static str,
    summary: &'static str,
    help: &'static str,
    level: &'static str,
}

/// What each engine rule checks and how to fix what it finds.
fn rule(id: RuleId) -> Rule {
    let (name, summary, help) = match id {
        RuleId::RunAsRoot => (
            "RunAsRoot",
            "A container on a hardened image would run as root (UID 0).",
            "Docker Hardened Images are built to run as a nonroot user. Remove runAsUser: 0 \
             and use the runtime variant (the tag without -dev), which runs as nonroot; the \
             -dev variants run as root and belong in builds, not in production.",
        ),
        RuleId::PrivilegedPort => (
            "PrivilegedPort",
            "A nonroot hardened container declares a port below 1024.",
            "A nonroot process cannot bind ports below 1024. Listen on a high port (8080) and \
             map the Service's port to it (targetPort), or set the pod sysctl \
             net.ipv4.ip_unprivileged_port_start.",
        ),
        RuleId::InvalidImage => (
            "InvalidImage",
            "An image field is not a valid image reference.",
            "The kubelet could not pull this image: write it as \
             [registry/]repository[:tag][@digest].",
        ),
    };
    Rule {
        id: id.as_str(),
        name,
        summary,
        help,
        level: "error",
    }
}

fn the_warning_rule() -> Rule {
    Rule {
        id: WARNING_RULE,
        name: "Warning",
        summary: "A warning of the webhook that no rule raises.",
        help: "The webhook admits the object and warns: an image the catalog snapshot does not \
               list, an upstream image left as it is (and why), a dev variant in use, or a \
               patch that audit mode only reports. The message says what to do.",
        level: "warning",
    }
}

/// Every rule, in the order of `ruleIndex`.
fn rules() -> Vec<Rule> {
    RuleId::ALL
        .into_iter()
        .map(rule)
        .chain([the_warning_rule()])
        .collect()
}

/// The engine rule a warning reports, if any: `[run-as-root] ...`, `audit: [run-as-root]
/// ...` and `warn: [run-as-root] ...` are the rule's findings admitted by the mode or the
/// policy.
fn rule_of_warning(warning: &str) -> Option<RuleId> {
    let rest = warning
        .strip_prefix("audit: ")
        .or_else(|| warning.strip_prefix("warn: "))
        .unwrap_or(warning);
    RuleId::ALL
        .into_iter()
        .find(|id| rest.starts_with(&format!("[{id}]")))
}

/// The id of a rule, or of the warning rule, and its index in [`rules`].
fn rule_ref(rule: Option<RuleId>) -> (&'static str, usize) {
    let warning = (WARNING_RULE, RuleId::ALL.len());
    rule.map_or(warning, |id| {
        let index = RuleId::ALL.iter().position(|known| *known == id);
        index.map_or(warning, |index| (id.as_str(), index))
    })
}

/// The container a warning is about: `container "name"` in its text.
fn warning_container(warning: &str) -> Option<&str> {
    let (_, rest) = warning.split_once("container \"")?;
    rest.split_once('"').map(|(name, _)| name)
}

/// A violation or warning, before its line is known.
struct Finding<'r> {
    candidate: &'r Candidate,
    rule: (&'static str, usize),
    level: &'static str,
    message: &'r str,
    container: Option<&'r str>,
}

/// Writes the report as one SARIF log.
pub(super) fn write(
    out: &mut impl Write,
    report: &Report,
    locator: &Locator<'_>,
) -> io::Result<()> {
    let (findings, notifications) = collect(report);
    let places: Vec<Place<'_>> = findings
        .iter()
        .map(|finding| Place {
            origin: &finding.candidate.origin,
            kind: finding.candidate.kind,
            container: finding.container,
        })
        .collect();
    let lines = locator.lines(&places);
    let results: Vec<Value> = findings
        .iter()
        .zip(lines)
        .map(|(finding, line)| {
            json!({
                "ruleId": finding.rule.0,
                "ruleIndex": finding.rule.1,
                "level": finding.level,
                "message": {"text": finding.message},
                "locations": [location(finding.candidate, line)],
            })
        })
        .collect();
    let log = json!({
        "$schema": SCHEMA,
        "version": VERSION,
        "runs": [{
            "tool": {"driver": {
                "name": "dhi-admission",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": INFORMATION_URI,
                "rules": driver_rules(),
            }},
            "invocations": [{
                "executionSuccessful": notifications.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    });
    serde_json::to_writer_pretty(&mut *out, &log)?;
    writeln!(out)
}

/// The report's violations and warnings, and its unreadable inputs as notifications.
fn collect(report: &Report) -> (Vec<Finding<'_>>, Vec<Value>) {
    let mut findings = Vec::new();
    let mut notifications = Vec::new();
    for entry in &report.entries {
        match entry {
            Entry::Checked { candidate, finding } => {
                for violation in &finding.violations {
                    findings.push(Finding {
                        candidate,
                        rule: rule_ref(Some(violation.rule)),
                        level: "error",
                        message: &violation.message,
                        container: Some(&violation.container),
                    });
                }
                for warning in &finding.warnings {
                    findings.push(Finding {
                        candidate,
                        rule: rule_ref(rule_of_warning(warning)),
                        level: "warning",
                        message: warning,
                        container: warning_container(warning),
                    });
                }
            }
            Entry::Skipped(_) => {}
            Entry::Error(err) => notifications.push(json!({
                "level": "error",
                "message": {"text": err.to_string()},
                "locations": artifact(&err.origin.source)
                    .map(|artifact| vec![json!({"physicalLocation": {"artifactLocation": artifact}})])
                    .unwrap_or_default(),
            })),
        }
    }
    (findings, notifications)
}

/// The tool's rules, with their help.
fn driver_rules() -> Vec<Value> {
    rules()
        .iter()
        .map(|rule| {
            json!({
                "id": rule.id,
                "name": rule.name,
                "shortDescription": {"text": rule.summary},
                "help": {"text": rule.help},
                "helpUri": format!("{INFORMATION_URI}#check-manifests-offline"),
                "defaultConfiguration": {"level": rule.level},
            })
        })
        .collect()
}

/// Where a finding is: the file and line (for files), and the object by name.
fn location(candidate: &Candidate, line: Option<usize>) -> Value {
    let mut location = serde_json::Map::new();
    if let Some(artifact) = artifact(&candidate.origin.source) {
        let mut physical = json!({"artifactLocation": artifact});
        if let Some(line) = line {
            physical["region"] = json!({"startLine": line});
        }
        location.insert("physicalLocation".to_owned(), physical);
    }
    location.insert(
        "logicalLocations".to_owned(),
        json!([{"name": candidate.name.as_deref().unwrap_or("(unnamed)"),
               "fullyQualifiedName": fully_qualified_name(candidate),
               "kind": "resource"}]),
    );
    Value::Object(location)
}

/// `Deployment shop/web`, then the document and field when the object is not the
/// document itself.
fn fully_qualified_name(candidate: &Candidate) -> String {
    let name = candidate.name.as_deref().unwrap_or("(unnamed)");
    let mut out = match &candidate.namespace {
        Some(namespace) => format!("{} {namespace}/{name}", candidate.kind),
        None => format!("{} {name}", candidate.kind),
    };
    let Origin { document, .. } = &candidate.origin;
    if let Some(number) = document {
        out.push_str(&format!(" (document {number}"));
        if !candidate.origin.pointer.is_empty() {
            out.push_str(&format!(", {}", candidate.origin.field_path()));
        }
        out.push(')');
    }
    out
}

/// A file as an artifact location: a relative path stays relative (code-scanning UIs
/// resolve it against the repository root), an absolute one is a `file://` URI.
/// Standard input has none.
fn artifact(source: &Source) -> Option<Value> {
    let Source::File(path) = source else {
        return None;
    };
    Some(json!({"uri": file_uri(path)}))
}

/// `path` as a URI reference: `/` separated, other bytes than unreserved ones escaped.
fn file_uri(path: &Path) -> String {
    let text = path.to_string_lossy();
    let relative = text.strip_prefix("./").unwrap_or(&text);
    let mut uri = String::with_capacity(relative.len() + 8);
    if path.is_absolute() {
        uri.push_str("file://");
    }
    for byte in relative.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(char::from(byte))
            }
            _ => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_reported_under_their_rule() {
        let rule = |warning| rule_ref(rule_of_warning(warning));
        assert_eq!(
            rule("[run-as-root] container \"a\" ..."),
            ("run-as-root", 0)
        );
        assert_eq!(
            rule("audit: [privileged-port] container \"a\" ..."),
            ("privileged-port", 1)
        );
        assert_eq!(rule("warn: [invalid-image] ..."), ("invalid-image", 2));
        assert_eq!(
            rule("container \"a\" uses dev variant dhi.io/python:3.13-dev"),
            (WARNING_RULE, 3)
        );
        assert_eq!(
            warning_container("container \"hubble-relay\": quay.io/x not rewritten"),
            Some("hubble-relay")
        );
        assert_eq!(warning_container("audit: dhi-admission would patch"), None);
    }

    #[test]
    fn paths_become_uri_references() {
        assert_eq!(
            file_uri(Path::new("./k8s/web app.yaml")),
            "k8s/web%20app.yaml"
        );
        assert_eq!(
            file_uri(Path::new("/srv/k8s/a#b.yaml")),
            "file:///srv/k8s/a%23b.yaml"
        );
        assert_eq!(file_uri(Path::new("deploy/ä.yaml")), "deploy/%C3%A4.yaml");
    }

    #[test]
    fn every_engine_rule_has_help() {
        let rules = rules();
        assert_eq!(rules.len(), RuleId::ALL.len() + 1);
        for rule in &rules {
            assert!(
                !rule.help.is_empty() && !rule.summary.is_empty(),
                "{}",
                rule.id
            );
        }
        for (index, id) in RuleId::ALL.into_iter().enumerate() {
            assert_eq!(rule_ref(Some(id)), (rules[index].id, index));
        }
        assert_eq!(rules[RuleId::ALL.len()].id, WARNING_RULE);
    }
}
