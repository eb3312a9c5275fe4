//! JSON Patch (RFC 6902) builders addressed by path, never by re-serialising the object.
//!
//! Pointers are built from tokens (`PointerBuf::from_tokens`), so RFC 6901 escaping is
//! right by construction. A missing parent is created by one `add` of the whole object
//! (`securityContext: {runAsUser: ..}`) rather than by a leaf under a missing parent.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use serde_json::{Map, Value};

/// Which list of the pod spec a container sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerList {
    /// `initContainers`
    Init,
    /// `containers`
    Regular,
    /// `ephemeralContainers`
    Ephemeral,
}

impl ContainerList {
    /// The field name in the pod spec.
    pub fn field(self) -> &'static str {
        match self {
            Self::Init => "initContainers",
            Self::Regular => "containers",
            Self::Ephemeral => "ephemeralContainers",
        }
    }
}

/// The securityContext fields injected into a container: `runAsUser` always, the
/// others only where the container and the pod leave them unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedUser {
    /// `runAsUser`
    pub uid: i64,
    /// `runAsGroup`, if injected.
    pub gid: Option<i64>,
    /// Inject `runAsNonRoot: true`.
    pub non_root: bool,
}

impl InjectedUser {
    fn fields(self) -> Vec<(&'static str, Value)> {
        let mut fields = vec![("runAsUser", Value::from(self.uid))];
        if let Some(gid) = self.gid {
            fields.push(("runAsGroup", Value::from(gid)));
        }
        if self.non_root {
            fields.push(("runAsNonRoot", Value::Bool(true)));
        }
        fields
    }
}

/// Collects operations against one pod spec, reached by `prefix` from the object root.
#[derive(Debug)]
pub struct SpecPatch {
    prefix: &'static [&'static str],
    ops: Vec<PatchOperation>,
}

impl SpecPatch {
    /// A builder for the spec at `prefix` (see `WorkloadKind::spec_path`).
    pub fn new(prefix: &'static [&'static str]) -> Self {
        Self {
            prefix,
            ops: Vec::new(),
        }
    }

    fn pointer(&self, rest: &[&str]) -> PointerBuf {
        PointerBuf::from_tokens(self.prefix.iter().chain(rest).copied())
    }

    fn container_pointer(&self, list: ContainerList, index: usize, rest: &[&str]) -> PointerBuf {
        let mut ptr = self.pointer(&[list.field()]);
        ptr.push_back(index);
        for token in rest {
            ptr.push_back(*token);
        }
        ptr
    }

    /// Replaces a container's image.
    pub fn set_image(&mut self, list: ContainerList, index: usize, image: String) {
        let path = self.container_pointer(list, index, &["image"]);
        self.ops.push(PatchOperation::Replace(ReplaceOperation {
            path,
            value: Value::String(image),
        }));
    }

    /// Adds the user fields to a container's securityContext, creating it when absent.
    pub fn add_container_security(
        &mut self,
        list: ContainerList,
        index: usize,
        has_context: bool,
        user: InjectedUser,
    ) {
        let fields = user.fields();
        if has_context {
            for (key, value) in fields {
                let path = self.container_pointer(list, index, &["securityContext", key]);
                self.ops
                    .push(PatchOperation::Add(AddOperation { path, value }));
            }
        } else {
            let path = self.container_pointer(list, index, &["securityContext"]);
            let object = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            self.ops.push(PatchOperation::Add(AddOperation {
                path,
                value: Value::Object(object),
            }));
        }
    }

    /// Sets the pod-level `fsGroup`, creating the pod securityContext when absent.
    pub fn add_fs_group(&mut self, has_context: bool, gid: i64) {
        let (path, value) = if has_context {
            (
                self.pointer(&["securityContext", "fsGroup"]),
                Value::from(gid),
            )
        } else {
            let mut ctx = Map::new();
            ctx.insert("fsGroup".to_owned(), Value::from(gid));
            (self.pointer(&["securityContext"]), Value::Object(ctx))
        };
        self.ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Adds `imagePullSecrets` entries: the whole list when the spec has none, else appends.
    pub fn add_pull_secrets<'n>(
        &mut self,
        has_list: bool,
        names: impl IntoIterator<Item = &'n str>,
    ) {
        let entry = |name: &str| {
            let mut obj = Map::new();
            obj.insert("name".to_owned(), Value::String(name.to_owned()));
            Value::Object(obj)
        };
        let mut names = names.into_iter().peekable();
        if names.peek().is_none() {
            return;
        }
        if has_list {
            for name in names {
                let path = self.pointer(&["imagePullSecrets", "-"]);
                self.ops.push(PatchOperation::Add(AddOperation {
                    path,
                    value: entry(name),
                }));
            }
        } else {
            let value = Value::Array(names.map(entry).collect());
            let path = self.pointer(&["imagePullSecrets"]);
            self.ops
                .push(PatchOperation::Add(AddOperation { path, value }));
        }
    }

    /// The operations, in the order they must be applied.
    pub fn into_ops(self) -> Vec<PatchOperation> {
        self.ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_are_escaped_and_parents_created() {
        let mut p = SpecPatch::new(&["spec", "template", "spec"]);
        p.set_image(ContainerList::Regular, 1, "dhi.io/nginx:1".into());
        let f = InjectedUser {
            uid: 65532,
            gid: None,
            non_root: false,
        };
        p.add_container_security(ContainerList::Init, 0, false, f);
        p.add_container_security(ContainerList::Init, 2, true, f);
        p.add_fs_group(false, 65532);
        p.add_pull_secrets(false, ["a/b~c"]);
        p.add_pull_secrets(true, ["d"]);
        let ops = serde_json::to_value(json_patch::Patch(p.into_ops())).unwrap();
        assert_eq!(
            ops,
            json!([
                {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "dhi.io/nginx:1"},
                {"op": "add", "path": "/spec/template/spec/initContainers/0/securityContext", "value": {"runAsUser": 65532}},
                {"op": "add", "path": "/spec/template/spec/initContainers/2/securityContext/runAsUser", "value": 65532},
                {"op": "add", "path": "/spec/template/spec/securityContext", "value": {"fsGroup": 65532}},
                {"op": "add", "path": "/spec/template/spec/imagePullSecrets", "value": [{"name": "a/b~c"}]},
                {"op": "add", "path": "/spec/template/spec/imagePullSecrets/-", "value": {"name": "d"}},
            ])
        );
    }

    #[test]
    fn keys_with_slash_and_tilde_are_escaped() {
        let p = SpecPatch::new(&["a/b", "c~d"]);
        assert_eq!(p.pointer(&["x"]).as_str(), "/a~1b/c~0d/x");
    }
}
