//! The common documents read straight into the typed values the checks judge, without a
//! `serde_json::Value` tree in between: a Pod, a workload controller (its pod template), or a
//! List of them, with `kind` ahead of `spec` as `kubectl` and hand-written manifests put it.
//! Whatever else a document holds is skipped as it is parsed.
//!
//! YAML goes through libyaml (`serde_yaml_ng`), about twice as fast as serde-saphyr on these
//! documents (docs/BENCHMARKS.md); JSON through serde_json. A document with a merge key (`<<`),
//! which libyaml's typed reading would not apply, is left to the general reader, and so is
//! anything libyaml refuses (its alias expansion is capped against YAML bombs).
//!
//! Anything this reader does not take exactly as it is (another kind, `spec` before `kind`, a
//! repeated key, a value of the wrong type, a controller without a pod template) makes it give
//! up on the document, and the caller reads that document the general way, which also gives the
//! error with its field path. So a document read here gives what the general reader would give,
//! only sooner.

use std::fmt;

use k8s_openapi::api::core::v1::{PodSpec, PodStatus, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::strict_strings::Strict;
use crate::snapshot::WorkloadKind;

/// A document as this reader took it.
#[derive(Debug)]
pub enum TypedDoc {
    Workload(Box<TypedWorkload>),
    /// A `List` (or `<Kind>List`) whose items are all workloads.
    List(Vec<TypedWorkload>),
}

/// A workload object: its own metadata, and the pod (or pod template) the checks judge.
#[derive(Debug)]
pub struct TypedWorkload {
    pub kind: WorkloadKind,
    pub api_version: Option<String>,
    /// The object's metadata (absent or `null`: none).
    pub metadata: Option<ObjectMeta>,
    /// A Pod's spec and status; a controller's pod template (metadata and spec).
    pub pod: TypedPod,
}

#[derive(Debug)]
pub enum TypedPod {
    Pod {
        spec: PodSpec,
        status: Option<PodStatus>,
    },
    Template {
        metadata: Option<ObjectMeta>,
        spec: PodSpec,
    },
}

/// One YAML document (its text between `---` markers), or `None` when the general reader must
/// read it.
pub fn yaml(doc: &str) -> Option<TypedDoc> {
    if doc.contains("<<") {
        return None;
    }
    TypedDoc::deserialize(Strict(serde_yaml_ng::Deserializer::from_str(doc))).ok()
}

/// A JSON document that is one `List` (what `kubectl get -o json` prints): the raw text of each
/// item, so a List of any size is read one item at a time. `None` when the document is anything
/// else (or not valid JSON), for the general reader.
pub fn json_list(text: &str) -> Option<Vec<&serde_json::value::RawValue>> {
    #[derive(Deserialize)]
    struct Shape<'a> {
        kind: String,
        #[serde(rename = "apiVersion")]
        _api_version: Option<String>,
        #[serde(borrow)]
        items: Option<Vec<&'a serde_json::value::RawValue>>,
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let shape = Shape::deserialize(&mut de).ok()?;
    de.end().ok()?;
    if !is_list_kind(&shape.kind) {
        return None;
    }
    shape.items
}

/// One item of a List, if it is a workload this reader takes.
pub fn json_item(text: &str) -> Option<TypedWorkload> {
    serde_json::from_str::<Item>(text).ok().map(|i| i.0)
}

impl<'de> Deserialize<'de> for TypedDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor { nested: false })
    }
}

/// An item of a List: a workload and nothing else.
struct Item(TypedWorkload);

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_map(ObjectVisitor { nested: true })? {
            TypedDoc::Workload(w) => Ok(Item(*w)),
            TypedDoc::List(_) => Err(de::Error::custom("a List inside a List")),
        }
    }
}

/// The keys this reader looks at; any other is skipped.
enum Key {
    Kind,
    ApiVersion,
    Metadata,
    Spec,
    Status,
    Items,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "kind" => Key::Kind,
                    "apiVersion" => Key::ApiVersion,
                    "metadata" => Key::Metadata,
                    "spec" => Key::Spec,
                    "status" => Key::Status,
                    "items" => Key::Items,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// A string as the general reader sees one: a YAML scalar that resolves to a number, boolean or
/// null is not one.
struct StrictString;

impl<'de> DeserializeSeed<'de> for StrictString {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = String;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
                Ok(v)
            }
        }
        d.deserialize_any(V)
    }
}

/// A controller's spec: only its pod template is read.
#[derive(Deserialize)]
struct TemplateHolder {
    template: Option<PodTemplateSpec>,
}

/// A CronJob's spec: `jobTemplate.spec.template`.
#[derive(Deserialize)]
struct CronJobHolder {
    #[serde(rename = "jobTemplate")]
    job_template: Option<JobTemplateHolder>,
}

#[derive(Deserialize)]
struct JobTemplateHolder {
    spec: Option<TemplateHolder>,
}

fn give_up<E: de::Error>(why: &str) -> E {
    E::custom(format_args!("not read directly: {why}"))
}

/// Sets `slot` once; a repeated key makes the reader give up (the general reader decides what a
/// repeated key means).
fn set_once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(give_up("repeated key"));
    }
    *slot = Some(value);
    Ok(())
}

struct ObjectVisitor {
    /// An item of a List: a List kind is not expected here.
    nested: bool,
}

pub(super) fn is_list_kind(kind: &str) -> bool {
    kind.ends_with("List")
}

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = TypedDoc;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypedDoc, A::Error> {
        let mut kind: Option<String> = None;
        let mut workload: Option<WorkloadKind> = None;
        let mut api_version: Option<String> = None;
        let mut metadata: Option<Option<ObjectMeta>> = None;
        let mut pod: Option<TypedPod> = None;
        let mut status: Option<Option<PodStatus>> = None;
        let mut items: Option<Vec<TypedWorkload>> = None;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Kind => {
                    let k = map.next_value_seed(StrictString)?;
                    workload = WorkloadKind::from_kind(&k);
                    if workload.is_none() && (self.nested || !is_list_kind(&k)) {
                        return Err(give_up("not a workload"));
                    }
                    set_once(&mut kind, k)?;
                }
                Key::ApiVersion => {
                    let v = map.next_value_seed(StrictString)?;
                    set_once(&mut api_version, v)?;
                }
                Key::Metadata => {
                    let m: Option<ObjectMeta> = map.next_value()?;
                    set_once(&mut metadata, m)?;
                }
                Key::Spec => {
                    let spec = match workload {
                        None => return Err(give_up("spec before kind")),
                        Some(WorkloadKind::Pod) => match map.next_value::<Option<PodSpec>>()? {
                            Some(spec) => TypedPod::Pod { spec, status: None },
                            None => return Err(give_up("no spec")),
                        },
                        Some(WorkloadKind::CronJob) => {
                            let holder: Option<CronJobHolder> = map.next_value()?;
                            template_pod(
                                holder
                                    .and_then(|h| h.job_template)
                                    .and_then(|j| j.spec)
                                    .and_then(|s| s.template),
                            )?
                        }
                        Some(_) => {
                            let holder: Option<TemplateHolder> = map.next_value()?;
                            template_pod(holder.and_then(|h| h.template))?
                        }
                    };
                    set_once(&mut pod, spec)?;
                }
                Key::Status if workload == Some(WorkloadKind::Pod) => {
                    let s: Option<PodStatus> = map.next_value()?;
                    set_once(&mut status, s)?;
                }
                Key::Status if workload.is_none() => return Err(give_up("status before kind")),
                // Before `kind` (as kubectl writes a List) or after a List kind.
                Key::Items if workload.is_none() && !self.nested => {
                    let list: Vec<Item> = map.next_value_seed(Items)?;
                    set_once(&mut items, list.into_iter().map(|i| i.0).collect())?;
                }
                Key::Status | Key::Items | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if kind.is_none() {
            return Err(give_up("no kind"));
        }
        let Some(workload) = workload else {
            // A List kind: its items must have been read.
            return match items {
                Some(items) => Ok(TypedDoc::List(items)),
                None => Err(give_up("a List without items")),
            };
        };
        let mut pod = pod.ok_or_else(|| give_up("no spec"))?;
        if let (TypedPod::Pod { status: slot, .. }, Some(s)) = (&mut pod, status) {
            *slot = s;
        }
        Ok(TypedDoc::Workload(Box::new(TypedWorkload {
            kind: workload,
            api_version,
            metadata: metadata.flatten(),
            pod,
        })))
    }
}

fn template_pod<E: de::Error>(template: Option<PodTemplateSpec>) -> Result<TypedPod, E> {
    match template {
        Some(PodTemplateSpec {
            metadata,
            spec: Some(spec),
        }) => Ok(TypedPod::Template { metadata, spec }),
        _ => Err(give_up("no pod template")),
    }
}

/// `items`: a sequence (a `null` or any other value makes the reader give up).
struct Items;

impl<'de> DeserializeSeed<'de> for Items {
    type Value = Vec<Item>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Item>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<Item>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of objects")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Vec<Item>, S::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(item) = seq.next_element::<Item>()? {
                    out.push(item);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_pod_and_a_controller_template() {
        let pod = yaml("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: a}\nspec:\n  containers: [{name: c}]\nstatus: {phase: Running}\nextra: [1, 2]\n");
        let Some(TypedDoc::Workload(w)) = pod else {
            panic!("pod not read")
        };
        assert_eq!(w.kind, WorkloadKind::Pod);
        assert!(
            matches!(&w.pod, TypedPod::Pod { spec, status: Some(s) } if spec.containers[0].name == "c" && s.phase.as_deref() == Some("Running"))
        );
        let cron = yaml("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: j}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        metadata: {labels: {a: b}}\n        spec: {containers: [{name: c}]}\n");
        let Some(TypedDoc::Workload(w)) = cron else {
            panic!("cronjob not read")
        };
        assert!(matches!(
            &w.pod,
            TypedPod::Template {
                metadata: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn reads_a_list_whose_items_come_before_its_kind() {
        let text = r#"{"apiVersion": "v1", "items": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}], "kind": "List", "metadata": {"resourceVersion": ""}}"#;
        let doc: TypedDoc = serde_json::from_str(text).expect("list");
        assert!(matches!(doc, TypedDoc::List(ref items) if items.len() == 1));
    }

    #[test]
    fn a_json_list_is_split_into_its_items() {
        let text = r#"{"apiVersion": "v1", "items": [{"kind": "Pod", "spec": {"containers": []}}, {"kind": "Namespace"}], "kind": "PodList"}"#;
        let items = json_list(text).expect("a list");
        assert_eq!(items.len(), 2);
        assert!(json_item(items[0].get()).is_some());
        assert!(
            json_item(items[1].get()).is_none(),
            "left to the general reader"
        );
        for other in [
            r#"{"kind": "Pod", "items": []}"#,
            r#"{"kind": "List", "items": null}"#,
            r#"{"kind": "List", "apiVersion": 1, "items": []}"#,
            r#"{"kind": "List", "items": []} {"kind": "List", "items": []}"#,
        ] {
            assert!(json_list(other).is_none(), "{other}");
        }
    }

    #[test]
    fn gives_up_on_what_the_general_reader_must_judge() {
        for text in [
            // Not a workload.
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
            // spec before kind.
            "spec: {containers: [{name: c}]}\nkind: Pod\n",
            // A repeated key.
            "kind: Pod\nkind: Pod\nspec: {containers: [{name: c}]}\n",
            // A number where the general reader wants a string.
            "apiVersion: 1\nkind: Pod\nspec: {containers: [{name: c}]}\n",
            // A label that is a boolean, not a string (kubectl refuses it too).
            "kind: Pod\nmetadata: {labels: {sidecar.istio.io/inject: false}}\nspec: {containers: [{name: c}]}\n",
            // A wrong type inside the spec.
            "kind: Pod\nspec:\n  containers:\n  - name: c\n    securityContext: {runAsUser: root}\n",
            // A controller without a template, a Pod without a spec.
            "apiVersion: apps/v1\nkind: Deployment\nspec: {replicas: 1}\n",
            "kind: Pod\nspec: null\n",
            // A List holding something else.
            "apiVersion: v1\nitems:\n- {kind: Namespace, metadata: {name: a}}\nkind: List\n",
            // A List inside a List.
            "items:\n- {kind: List, items: []}\nkind: List\n",
            // A merge key, which only the general reader applies.
            "kind: Pod\nx: &sc {privileged: true}\nspec:\n  containers:\n  - name: c\n    securityContext:\n      <<: *sc\n",
        ] {
            assert!(yaml(text).is_none(), "read directly: {text}");
        }
    }
}
