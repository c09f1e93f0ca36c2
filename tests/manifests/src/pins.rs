//! The places in `istio/` that pin the filter image by digest, and rewriting them.
//!
//! A pin is a WasmPlugin whose `spec.url` is `oci://…/egress-filter…`, or an EnvoyFilter
//! `vm_config.code.remote` whose `http_uri.uri` is such a URL; each carries a `sha256` that must be
//! the image's manifest digest.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::yaml::{self, Document, YamlError};

/// Repository name of the filter image (the last path segment of the OCI reference).
pub const IMAGE_NAME: &str = "egress-filter";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub path: PathBuf,
    pub line: usize,
    pub kind: String,
    pub name: String,
    pub url: String,
    /// The pinned value, 64 hex digits (empty when the field is missing).
    pub sha256: String,
}

impl Pin {
    pub fn describe(&self) -> String {
        format!(
            "{}:{} ({} {})",
            self.path.display(),
            self.line,
            self.kind,
            self.name
        )
    }
}

/// True for `oci://host/path/egress-filter:tag` and `…/egress-filter@sha256:…`.
pub fn is_filter_image_url(url: &str) -> bool {
    let Some(reference) = url.strip_prefix("oci://") else {
        return false;
    };
    let repository = reference.split('@').next().unwrap_or(reference);
    let last_segment = repository.rsplit('/').next().unwrap_or(repository);
    let name = last_segment.split(':').next().unwrap_or(last_segment);
    name == IMAGE_NAME
}

/// Pins in one document.
pub fn pins_in(document: &Document) -> Vec<Pin> {
    let name = document.value["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let pin = |url: &str, sha256: &Value| Pin {
        path: document.path.clone(),
        line: document.line,
        kind: document.kind().to_string(),
        name: name.clone(),
        url: url.to_string(),
        // A digest YAML reads as a number (all digits, unquoted) shows as that number, never
        // matches, and fails schema validation too: quote digests.
        sha256: match sha256 {
            Value::String(text) => text.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        },
    };
    match document.kind() {
        "WasmPlugin" => {
            let spec = &document.value["spec"];
            match spec["url"].as_str() {
                Some(url) if is_filter_image_url(url) => vec![pin(url, &spec["sha256"])],
                _ => Vec::new(),
            }
        }
        "EnvoyFilter" => {
            let mut found = Vec::new();
            collect_remote_code(&document.value["spec"], &mut |remote| {
                if let Some(url) = remote["http_uri"]["uri"].as_str() {
                    if is_filter_image_url(url) {
                        found.push(pin(url, &remote["sha256"]));
                    }
                }
            });
            found
        }
        _ => Vec::new(),
    }
}

fn collect_remote_code(value: &Value, visit: &mut dyn FnMut(&Value)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "remote" && child.is_object() {
                    visit(child);
                }
                collect_remote_code(child, visit);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_remote_code(item, visit)),
        _ => {}
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Every pin in the YAML files under `dir`.
pub fn find_pins(dir: &Path) -> Result<Vec<Pin>, YamlError> {
    let mut pins = Vec::new();
    for path in yaml::yaml_files(dir).map_err(|source| YamlError::Io {
        path: dir.to_path_buf(),
        source,
    })? {
        for document in yaml::load_documents(&path)? {
            pins.extend(pins_in(&document));
        }
    }
    Ok(pins)
}

/// Rewrites every pin under `dir` to `sha256` (64 hex digits). Only the digest text inside the
/// pinning documents changes; comments and layout stay. Returns the files that changed.
pub fn update_pins(dir: &Path, sha256: &str) -> Result<Vec<PathBuf>, YamlError> {
    let mut changed = Vec::new();
    for path in yaml::yaml_files(dir).map_err(|source| YamlError::Io {
        path: dir.to_path_buf(),
        source,
    })? {
        let text = std::fs::read_to_string(&path).map_err(|source| YamlError::Io {
            path: path.clone(),
            source,
        })?;
        let mut output = String::with_capacity(text.len());
        let mut file_changed = false;
        for (number, (line, chunk)) in yaml::split_documents(&text).into_iter().enumerate() {
            if number > 0 {
                output.push_str("---\n");
            }
            let documents = yaml::parse_documents(&path, &chunk).map_err(|e| match e {
                YamlError::Parse { message, .. } => YamlError::Parse {
                    path: path.clone(),
                    index: number,
                    line,
                    message,
                },
                other => other,
            })?;
            let mut chunk = chunk;
            for pin in documents.iter().flat_map(pins_in) {
                if !is_sha256_hex(&pin.sha256) {
                    // Only a well-formed digest is safe to find and replace in the text.
                    return Err(YamlError::Parse {
                        path: path.clone(),
                        index: number,
                        line,
                        message: format!(
                            "{} {} pins {} with sha256 {:?}: write 64 hex digits in quotes first",
                            pin.kind, pin.name, pin.url, pin.sha256
                        ),
                    });
                }
                if pin.sha256 != sha256 {
                    chunk = chunk.replace(&pin.sha256, sha256);
                    file_changed = true;
                }
            }
            output.push_str(&chunk);
        }
        if file_changed {
            std::fs::write(&path, output).map_err(|source| YamlError::Io {
                path: path.clone(),
                source,
            })?;
            changed.push(path);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn recognises_the_filter_image() {
        assert!(is_filter_image_url(
            "oci://ghcr.io/egress-guard/egress-filter:0.1.0"
        ));
        assert!(is_filter_image_url("oci://127.0.0.1:5000/egress-filter:v1"));
        assert!(is_filter_image_url(&format!(
            "oci://r.io/egress-filter@sha256:{OLD}"
        )));
        assert!(!is_filter_image_url("oci://ghcr.io/x/other-filter:1"));
        assert!(!is_filter_image_url(
            "https://example.com/egress-filter.wasm"
        ));
    }

    #[test]
    fn rewrites_only_pinning_documents() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "# keep me\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: a\nspec:\n  url: oci://r.io/egress-filter:1\n  sha256: \"{OLD}\" # pinned\n---\nkind: ConfigMap\nmetadata:\n  name: b\ndata:\n  unrelated: \"{OLD}\"\n"
        );
        let file = dir.path().join("x.yaml");
        std::fs::write(&file, &text).unwrap();
        assert_eq!(find_pins(dir.path()).unwrap()[0].sha256, OLD);
        assert_eq!(update_pins(dir.path(), NEW).unwrap(), vec![file.clone()]);
        let after = std::fs::read_to_string(&file).unwrap();
        assert_eq!(after, text.replacen(OLD, NEW, 1));
        assert!(
            update_pins(dir.path(), NEW).unwrap().is_empty(),
            "idempotent"
        );

        std::fs::write(&file, text.replace(&format!("\"{OLD}\""), "12")).unwrap();
        let err = update_pins(dir.path(), NEW).unwrap_err().to_string();
        assert!(err.contains("write 64 hex digits in quotes"), "{err}");
    }

    #[test]
    fn finds_envoyfilter_remote_code() {
        let doc = yaml::parse_documents(
            Path::new("e.yaml"),
            &format!("kind: EnvoyFilter\nmetadata: {{name: e}}\nspec:\n  configPatches:\n  - patch:\n      value:\n        typed_config:\n          config:\n            vm_config:\n              code:\n                remote:\n                  http_uri: {{uri: \"oci://r.io/egress-filter:1\"}}\n                  sha256: \"{OLD}\"\n"),
        )
        .unwrap();
        let pins = pins_in(&doc[0]);
        assert_eq!(pins.len(), 1);
        assert_eq!(
            (pins[0].kind.as_str(), pins[0].sha256.as_str()),
            ("EnvoyFilter", OLD)
        );
    }
}
