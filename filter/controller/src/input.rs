//! Policy objects and Namespaces read from YAML or JSON files (`egress-controller compile`), each
//! remembered with the file and document it came from, so errors point there.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::compile::{PolicyError, PolicySet};
use crate::resources::{ClusterEgressPolicy, EgressPolicy, PolicyRef, API_VERSION};

/// A document of an input file: `file:N` (N counts the file's non-empty documents from 1).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Origin {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.document)
    }
}

/// One problem in the input: `file:document: field path: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// `None` for a problem with a file as a whole (unreadable, not YAML).
    pub origin: Option<Origin>,
    pub file: PathBuf,
    pub field: String,
    pub message: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(origin) => write!(f, "{origin}: {}: {}", self.field, self.message),
            None => write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            ),
        }
    }
}

/// What the files held.
#[derive(Debug, Default)]
pub struct LoadedInput {
    pub set: PolicySet,
    pub origins: BTreeMap<PolicyRef, Origin>,
    /// Documents that are not Kubernetes objects, or of kinds the compiler does not read.
    pub skipped: Vec<String>,
}

impl LoadedInput {
    /// A compiler error as `file:document: field: reason`.
    pub fn locate(&self, error: &PolicyError) -> String {
        match self.origins.get(&error.policy) {
            Some(origin) => format!("{origin}: {}: {}", error.field, error.message),
            None => error.to_string(),
        }
    }
}

/// Reads every `.yaml`, `.yml` and `.json` file of `path` (a file, or a directory read
/// recursively in name order).
pub fn load(path: &Path) -> Result<LoadedInput, Vec<InputError>> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    collect(path, &mut files, &mut errors);
    let mut loaded = LoadedInput::default();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => read_text(&file, &text, &mut loaded, &mut errors),
            Err(e) => errors.push(InputError {
                origin: None,
                file: file.clone(),
                field: "(file)".into(),
                message: e.to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

fn collect(path: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<InputError>) {
    if path.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(InputError {
                origin: None,
                file: path.to_path_buf(),
                field: "(file)".into(),
                message: e.to_string(),
            });
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect(&p, files, errors);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(p);
        }
    }
}

fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    // kubectl reads only `true`/`false` as booleans.
    options.strict_booleans = true;
    options
}

/// Reads the documents of one file's text into `loaded`.
pub fn read_text(file: &Path, text: &str, loaded: &mut LoadedInput, errors: &mut Vec<InputError>) {
    let is_json = file.extension().is_some_and(|e| e == "json");
    let documents: Result<Vec<Value>, String> = if is_json {
        serde_json::from_str::<Value>(text)
            .map(|v| vec![v])
            .map_err(|e| e.to_string())
    } else {
        serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options())
            .map_err(|e| e.to_string())
    };
    let documents = match documents {
        Ok(d) => d,
        Err(message) => {
            errors.push(InputError {
                origin: None,
                file: file.to_path_buf(),
                field: "(syntax)".into(),
                message,
            });
            return;
        }
    };
    for (i, document) in documents.into_iter().enumerate() {
        let origin = Origin {
            file: file.to_path_buf(),
            document: i + 1,
        };
        read_object(document, "", &origin, loaded, errors);
    }
}

fn read_object(
    object: Value,
    prefix: &str,
    origin: &Origin,
    loaded: &mut LoadedInput,
    errors: &mut Vec<InputError>,
) {
    let api_version = object["apiVersion"].as_str().unwrap_or("").to_string();
    let kind = object["kind"].as_str().unwrap_or("").to_string();
    let error = |field: &str, message: String| InputError {
        origin: Some(origin.clone()),
        file: origin.file.clone(),
        field: format!("{prefix}{field}"),
        message,
    };
    match (api_version.as_str(), kind.as_str()) {
        (_, "List") | (_, "NamespaceList") | (_, "ClusterEgressPolicyList")
        | (_, "EgressPolicyList") => {
            if let Value::Array(items) = object["items"].clone() {
                for (i, item) in items.into_iter().enumerate() {
                    let mut item = item;
                    // Items of a typed list carry no kind.
                    if item.get("kind").is_none() && kind != "List" {
                        item["kind"] = Value::String(kind.trim_end_matches("List").to_string());
                        item["apiVersion"] = Value::String(api_version.clone());
                    }
                    read_object(item, &format!("{prefix}items[{i}]."), origin, loaded, errors);
                }
            }
        }
        ("v1", "Namespace") => match typed::<Namespace>(object) {
            Ok(ns) => loaded.set.namespaces.push(ns),
            Err((field, message)) => errors.push(error(&field, message)),
        },
        (API_VERSION, "ClusterEgressPolicy") => match typed::<ClusterEgressPolicy>(object) {
            Ok(policy) => remember(policy.reference(), origin, loaded, errors, prefix, |l| {
                l.set.cluster_policies.push(policy)
            }),
            Err((field, message)) => errors.push(error(&field, message)),
        },
        (API_VERSION, "EgressPolicy") => match typed::<EgressPolicy>(object) {
            Ok(policy) => remember(policy.reference(), origin, loaded, errors, prefix, |l| {
                l.set.egress_policies.push(policy)
            }),
            Err((field, message)) => errors.push(error(&field, message)),
        },
        (api, _) if api.starts_with("policy.egress-guard.dev/") => errors.push(error(
            "kind",
            format!("{api} {kind} is not a kind of this version; expected {API_VERSION} ClusterEgressPolicy or EgressPolicy"),
        )),
        ("", _) | (_, "") => loaded
            .skipped
            .push(format!("{origin}: {prefix}not a Kubernetes object (no apiVersion/kind)")),
        _ => loaded
            .skipped
            .push(format!("{origin}: {prefix}{api_version} {kind}: not read by the compiler")),
    }
}

fn remember(
    reference: PolicyRef,
    origin: &Origin,
    loaded: &mut LoadedInput,
    errors: &mut Vec<InputError>,
    prefix: &str,
    push: impl FnOnce(&mut LoadedInput),
) {
    if let Some(first) = loaded.origins.get(&reference) {
        errors.push(InputError {
            origin: Some(origin.clone()),
            file: origin.file.clone(),
            field: format!("{prefix}metadata.name"),
            message: format!("{reference} is already defined at {first}"),
        });
        return;
    }
    loaded.origins.insert(reference, origin.clone());
    push(loaded);
}

/// Deserializes a typed object; `Err` is (field path, message).
fn typed<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "(root)".into() } else { path };
        (path, e.into_inner().to_string())
    })
}
