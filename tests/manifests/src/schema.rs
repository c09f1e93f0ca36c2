//! Validation of custom resources against the structural OpenAPI v3 schemas of their CRDs, the
//! way the API server treats them: unknown fields (which it would prune silently) and nulls in
//! fields that are not nullable (which it would drop) are errors here, so nothing written in a
//! manifest can be lost on apply.
//!
//! Implemented keywords: `type`, `properties`, `additionalProperties` (schema or bool),
//! `required`, `enum`, `items`, `nullable`, `x-kubernetes-preserve-unknown-fields`,
//! `x-kubernetes-int-or-string`, `allOf`/`anyOf`/`oneOf`/`not` (as value validations, the only
//! form structural schemas allow), `pattern`, `minLength`/`maxLength`, `minimum`/`maximum` (and
//! their exclusive forms), `minItems`/`maxItems`, `minProperties`/`maxProperties`, `format`
//! (`int32`, `int64`, `double`, `byte`, `date-time`), `x-kubernetes-list-type` `set`/`map` with
//! `x-kubernetes-list-map-keys`. CEL rules (`x-kubernetes-validations`) are not evaluated here;
//! they are returned so callers can see which ones applied.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use regex::Regex;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("CRD {name}: {message}")]
    BadCrd { name: String, message: String },
    #[error("no CRD schema for apiVersion {api_version:?} kind {kind:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("pattern {pattern:?} at {path}: {message}")]
    BadPattern {
        pattern: String,
        path: String,
        message: String,
    },
}

/// One way an object breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, as `spec.servers[0].port.number`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The outcome of validating one object.
#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    /// CEL rules that applied to present values, as (path, rule): not evaluated.
    pub unevaluated_rules: Vec<(String, String)>,
}

/// The schemas of a set of CRDs, by (group, version, kind).
#[derive(Debug, Default)]
pub struct CrdSchemas {
    schemas: HashMap<(String, String, String), Value>,
    patterns: RefCell<HashMap<String, Regex>>,
}

impl CrdSchemas {
    /// Reads CustomResourceDefinition documents (other kinds are skipped).
    pub fn from_documents<'a>(
        documents: impl IntoIterator<Item = &'a Value>,
    ) -> Result<Self, SchemaError> {
        let mut schemas = HashMap::new();
        for crd in documents {
            if crd["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let name = crd["metadata"]["name"].as_str().unwrap_or("?").to_string();
            let bad = |message: &str| SchemaError::BadCrd {
                name: name.clone(),
                message: message.to_string(),
            };
            let group = crd["spec"]["group"]
                .as_str()
                .ok_or_else(|| bad("spec.group missing"))?;
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .ok_or_else(|| bad("spec.names.kind missing"))?;
            let versions = crd["spec"]["versions"]
                .as_array()
                .ok_or_else(|| bad("spec.versions missing"))?;
            for version in versions {
                let version_name = version["name"]
                    .as_str()
                    .ok_or_else(|| bad("a version has no name"))?;
                let schema = &version["schema"]["openAPIV3Schema"];
                if !schema.is_object() {
                    return Err(bad(&format!(
                        "version {version_name} has no openAPIV3Schema"
                    )));
                }
                schemas.insert(
                    (
                        group.to_string(),
                        version_name.to_string(),
                        kind.to_string(),
                    ),
                    schema.clone(),
                );
            }
        }
        Ok(CrdSchemas {
            schemas,
            patterns: RefCell::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.schemas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.schemas.is_empty()
    }

    /// Whether a schema exists for this apiVersion and kind.
    pub fn knows(&self, api_version: &str, kind: &str) -> bool {
        self.schema_for(api_version, kind).is_some()
    }

    fn schema_for(&self, api_version: &str, kind: &str) -> Option<&Value> {
        let (group, version) = api_version.split_once('/')?;
        self.schemas
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
    }

    /// Validates one object against the schema of its apiVersion and kind.
    pub fn validate(&self, object: &Value) -> Result<Report, SchemaError> {
        let api_version = object["apiVersion"].as_str().unwrap_or("");
        let kind = object["kind"].as_str().unwrap_or("");
        let schema =
            self.schema_for(api_version, kind)
                .ok_or_else(|| SchemaError::UnknownKind {
                    api_version: api_version.to_string(),
                    kind: kind.to_string(),
                })?;
        let mut report = Report::default();
        // apiVersion, kind and metadata are implicit in every CRD schema (some CRDs list them as
        // bare strings and objects); ObjectMeta is checked by the API server's own types.
        let mut root = object.clone();
        if let Some(map) = root.as_object_mut() {
            for implicit in ["apiVersion", "kind", "metadata"] {
                map.remove(implicit);
            }
        }
        let mut walker = Walker {
            patterns: &self.patterns,
            report: &mut report,
            error: None,
        };
        walker.check(schema, &root, "", Mode::Structural);
        match walker.error {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The schema that defines the object: unknown fields are errors.
    Structural,
    /// `allOf`/`anyOf`/`oneOf`/`not` branches: they only constrain values already defined.
    ValueValidation,
}

struct Walker<'a> {
    patterns: &'a RefCell<HashMap<String, Regex>>,
    report: &'a mut Report,
    error: Option<SchemaError>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(value: &Value, expected: &str) -> bool {
    let actual = type_name(value);
    actual == expected || (expected == "number" && actual == "integer")
}

impl Walker<'_> {
    fn violation(&mut self, path: &str, message: String) {
        self.report.violations.push(Violation {
            path: if path.is_empty() {
                "<root>".into()
            } else {
                path.into()
            },
            message,
        });
    }

    /// Runs `check` on a branch and reports whether it passed, without keeping its violations.
    fn passes(&mut self, schema: &Value, value: &Value, path: &str) -> bool {
        let before = self.report.violations.len();
        let rules_before = self.report.unevaluated_rules.len();
        self.check(schema, value, path, Mode::ValueValidation);
        let passed = self.report.violations.len() == before;
        self.report.violations.truncate(before);
        self.report.unevaluated_rules.truncate(rules_before);
        passed
    }

    fn check(&mut self, schema: &Value, value: &Value, path: &str, mode: Mode) {
        let Some(schema_map) = schema.as_object() else {
            return;
        };
        if value.is_null() {
            if schema["nullable"] != true && mode == Mode::Structural {
                self.violation(
                    path,
                    "null in a field that is not nullable (the API server drops it)".into(),
                );
            }
            return;
        }
        let int_or_string = schema["x-kubernetes-int-or-string"] == true;
        if int_or_string {
            if !matches!(type_name(value), "integer" | "string") {
                self.violation(
                    path,
                    format!(
                        "expected an integer or a string, found {}",
                        type_name(value)
                    ),
                );
                return;
            }
        } else if let Some(expected) = schema["type"].as_str() {
            if !has_type(value, expected) {
                self.violation(
                    path,
                    format!("expected {expected}, found {}", type_name(value)),
                );
                return;
            }
        }

        if let Some(allowed) = schema["enum"].as_array() {
            if !allowed.contains(value) {
                let names: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
                self.violation(
                    path,
                    format!("{value} is not one of [{}]", names.join(", ")),
                );
            }
        }

        match value {
            Value::String(text) => self.check_string(schema, text, path),
            Value::Number(_) => self.check_number(schema, value, path),
            Value::Array(items) => self.check_array(schema, items, path, mode),
            Value::Object(map) => self.check_object(schema, schema_map, map, path, mode),
            _ => {}
        }

        if let Some(branches) = schema["allOf"].as_array() {
            for branch in branches {
                self.check(branch, value, path, Mode::ValueValidation);
            }
        }
        // With x-kubernetes-int-or-string the anyOf only restates the two types.
        if let (Some(branches), false) = (schema["anyOf"].as_array(), int_or_string) {
            if !branches.iter().any(|b| self.passes(b, value, path)) {
                self.violation(path, "matches none of the anyOf alternatives".into());
            }
        }
        if let Some(branches) = schema["oneOf"].as_array() {
            let passing = branches
                .iter()
                .filter(|b| self.passes(b, value, path))
                .count();
            if passing != 1 {
                self.violation(
                    path,
                    format!(
                        "must match exactly one oneOf alternative, matches {passing}{}",
                        oneof_hint(branches, value)
                    ),
                );
            }
        }
        if let Some(negated) = schema.get("not") {
            if self.passes(negated, value, path) {
                self.violation(path, format!("must not match {negated}"));
            }
        }
        if let Some(rules) = schema["x-kubernetes-validations"].as_array() {
            for rule in rules {
                if let Some(text) = rule["rule"].as_str() {
                    self.report
                        .unevaluated_rules
                        .push((path.to_string(), text.to_string()));
                }
            }
        }
    }

    fn check_string(&mut self, schema: &Value, text: &str, path: &str) {
        let length = text.chars().count() as u64;
        if let Some(min) = schema["minLength"].as_u64() {
            if length < min {
                self.violation(path, format!("shorter than minLength {min}"));
            }
        }
        if let Some(max) = schema["maxLength"].as_u64() {
            if length > max {
                self.violation(path, format!("longer than maxLength {max}"));
            }
        }
        if let Some(pattern) = schema["pattern"].as_str() {
            match self.matches(pattern, text, path) {
                Some(true) | None => {}
                Some(false) => {
                    self.violation(path, format!("{text:?} does not match pattern {pattern:?}"))
                }
            }
        }
        match schema["format"].as_str() {
            Some("byte") if !is_base64(text) => {
                self.violation(path, format!("{text:?} is not base64 (format byte)"))
            }
            Some("date-time") if !is_rfc3339(text) => {
                self.violation(path, format!("{text:?} is not an RFC 3339 date-time"))
            }
            _ => {}
        }
    }

    fn matches(&mut self, pattern: &str, text: &str, path: &str) -> Option<bool> {
        let mut cache = self.patterns.borrow_mut();
        if !cache.contains_key(pattern) {
            match Regex::new(pattern) {
                Ok(regex) => {
                    cache.insert(pattern.to_string(), regex);
                }
                Err(e) => {
                    self.error.get_or_insert(SchemaError::BadPattern {
                        pattern: pattern.to_string(),
                        path: path.to_string(),
                        message: e.to_string(),
                    });
                    return None;
                }
            }
        }
        cache.get(pattern).map(|regex| regex.is_match(text))
    }

    fn check_number(&mut self, schema: &Value, value: &Value, path: &str) {
        let Some(number) = value.as_f64() else {
            return;
        };
        if let Some(min) = schema["minimum"].as_f64() {
            let exclusive = schema["exclusiveMinimum"] == true;
            if number < min || (exclusive && number == min) {
                self.violation(path, format!("{value} is below the minimum {min}"));
            }
        }
        if let Some(max) = schema["maximum"].as_f64() {
            let exclusive = schema["exclusiveMaximum"] == true;
            if number > max || (exclusive && number == max) {
                self.violation(path, format!("{value} is above the maximum {max}"));
            }
        }
        let in_range = match schema["format"].as_str() {
            Some("int32") => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
            Some("int64") => value.as_i64().is_some(),
            _ => true,
        };
        if !in_range {
            self.violation(
                path,
                format!("{value} does not fit format {}", schema["format"]),
            );
        }
    }

    fn check_array(&mut self, schema: &Value, items: &[Value], path: &str, mode: Mode) {
        let count = items.len() as u64;
        if let Some(min) = schema["minItems"].as_u64() {
            if count < min {
                self.violation(path, format!("fewer than minItems {min} items"));
            }
        }
        if let Some(max) = schema["maxItems"].as_u64() {
            if count > max {
                self.violation(path, format!("more than maxItems {max} items"));
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                self.check(item_schema, item, &format!("{path}[{index}]"), mode);
            }
        }
        match schema["x-kubernetes-list-type"].as_str() {
            Some("set") => {
                let mut seen = BTreeSet::new();
                for (index, item) in items.iter().enumerate() {
                    if !seen.insert(item.to_string()) {
                        self.violation(
                            &format!("{path}[{index}]"),
                            format!("duplicate {item} in a list of type set"),
                        );
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen = BTreeSet::new();
                for (index, item) in items.iter().enumerate() {
                    let key: Vec<String> = keys.iter().map(|k| item[*k].to_string()).collect();
                    if !seen.insert(key.clone()) {
                        self.violation(
                            &format!("{path}[{index}]"),
                            format!(
                                "duplicate key ({}) = ({}) in a list of type map",
                                keys.join(", "),
                                key.join(", ")
                            ),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn check_object(
        &mut self,
        schema: &Value,
        schema_map: &Map<String, Value>,
        map: &Map<String, Value>,
        path: &str,
        mode: Mode,
    ) {
        let count = map.len() as u64;
        if let Some(min) = schema["minProperties"].as_u64() {
            if count < min {
                self.violation(path, format!("fewer than minProperties {min} fields"));
            }
        }
        if let Some(max) = schema["maxProperties"].as_u64() {
            if count > max {
                self.violation(path, format!("more than maxProperties {max} fields"));
            }
        }
        if let Some(required) = schema["required"].as_array() {
            for field in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(field) {
                    self.violation(path, format!("required field {field:?} is missing"));
                }
            }
        }
        let properties = schema_map.get("properties").and_then(Value::as_object);
        let additional = schema_map.get("additionalProperties");
        let preserve_unknown = schema["x-kubernetes-preserve-unknown-fields"] == true;
        for (key, child) in map {
            let child_path = join(path, key);
            if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                self.check(child_schema, child, &child_path, mode);
            } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                self.check(additional, child, &child_path, mode);
            } else if additional == Some(&Value::Bool(true)) || preserve_unknown {
                // kept as written
            } else if mode == Mode::Structural {
                let known: Vec<&str> = properties
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                self.violation(
                    &child_path,
                    format!(
                        "unknown field {key:?} (the API server prunes it); known fields: {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
    }
}

/// For the `oneOf` Istio uses to say "at most one of these fields": name the fields that clash.
fn oneof_hint(branches: &[Value], value: &Value) -> String {
    let present: Vec<&str> = branches
        .iter()
        .filter_map(|b| b["required"].as_array())
        .flatten()
        .filter_map(Value::as_str)
        .filter(|field| value.get(*field).is_some())
        .collect();
    if present.len() > 1 {
        format!(" (only one of {} may be set)", present.join(", "))
    } else {
        String::new()
    }
}

fn is_base64(text: &str) -> bool {
    let trimmed = text.trim_end_matches('=');
    text.len().is_multiple_of(4)
        && text.len() - trimmed.len() <= 2
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn is_rfc3339(text: &str) -> bool {
    static PATTERN: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    PATTERN
        .get_or_init(|| {
            Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
                .expect("constant pattern") // ok-panic
        })
        .is_match(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(schema: Value) -> CrdSchemas {
        CrdSchemas::from_documents([&json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.io"},
            "spec": {"group": "example.io", "names": {"kind": "Thing"},
                     "versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema}}]}
        })])
        .unwrap()
    }

    fn violations(schemas: &CrdSchemas, spec: Value) -> Vec<String> {
        let object = json!({"apiVersion": "example.io/v1", "kind": "Thing",
                            "metadata": {"name": "t"}, "spec": spec});
        schemas
            .validate(&object)
            .unwrap()
            .violations
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn thing() -> CrdSchemas {
        crd(json!({"type": "object", "properties": {"spec": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
            "mode": {"type": "string", "enum": ["A", "B"]},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "format": "int32"},
            "target": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["number"],
                      "items": {"type": "object", "properties": {"number": {"type": "integer"}}}},
            "choice": {"type": "object",
                       "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                       "oneOf": [{"not": {"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}},
                                 {"required": ["a"]}, {"required": ["b"]}]},
            "maybe": {"type": "string", "nullable": true},
            "when": {"type": "string", "format": "date-time"}
        }}}}))
    }

    #[test]
    fn valid_object_passes() {
        let v = violations(
            &thing(),
            json!({"name": "abc", "mode": "A", "port": 443, "target": "http",
                   "labels": {"x": "y"}, "free": {"any": [1, {"thing": true}]},
                   "ports": [{"number": 1}, {"number": 2}], "choice": {"a": "x"},
                   "maybe": null, "when": "2024-01-02T03:04:05Z"}),
        );
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn each_keyword_rejects() {
        let schemas = thing();
        let cases: &[(&str, Value, &str)] = &[
            (
                "unknown field",
                json!({"name": "a", "nmae": "b"}),
                "spec.nmae: unknown field",
            ),
            ("required", json!({"mode": "A"}), "required field \"name\""),
            (
                "type",
                json!({"name": 5}),
                "spec.name: expected string, found integer",
            ),
            (
                "enum",
                json!({"name": "a", "mode": "C"}),
                "spec.mode: \"C\" is not one of",
            ),
            ("pattern", json!({"name": "A1"}), "does not match pattern"),
            (
                "maxLength",
                json!({"name": "abcdef"}),
                "longer than maxLength 5",
            ),
            ("minLength", json!({"name": ""}), "shorter than minLength 1"),
            (
                "maximum",
                json!({"name": "a", "port": 70000}),
                "above the maximum",
            ),
            (
                "minimum",
                json!({"name": "a", "port": 0}),
                "below the minimum",
            ),
            (
                "int-or-string",
                json!({"name": "a", "target": true}),
                "integer or a string",
            ),
            (
                "additionalProperties",
                json!({"name": "a", "labels": {"x": 1}}),
                "spec.labels.x: expected string",
            ),
            (
                "list map",
                json!({"name": "a", "ports": [{"number": 1}, {"number": 1}]}),
                "spec.ports[1]: duplicate key",
            ),
            (
                "oneOf",
                json!({"name": "a", "choice": {"a": "x", "b": "y"}}),
                "only one of a, b",
            ),
            (
                "null",
                json!({"name": "a", "mode": null}),
                "spec.mode: null in a field that is not nullable",
            ),
            (
                "date-time",
                json!({"name": "a", "when": "yesterday"}),
                "not an RFC 3339",
            ),
            (
                "nested unknown",
                json!({"name": "a", "ports": [{"numbr": 1}]}),
                "spec.ports[0].numbr: unknown field",
            ),
        ];
        for (case, spec, expected) in cases {
            let v = violations(&schemas, spec.clone());
            assert!(
                v.iter().any(|m| m.contains(expected)),
                "{case}: expected {expected:?} in {v:?}"
            );
        }
    }

    #[test]
    fn unknown_kind_and_top_level_fields() {
        let schemas = thing();
        let err = schemas
            .validate(&json!({"apiVersion": "example.io/v2", "kind": "Thing"}))
            .unwrap_err();
        assert!(err.to_string().contains("example.io/v2"));
        let report = schemas
            .validate(&json!({"apiVersion": "example.io/v1", "kind": "Thing",
                              "metadata": {}, "spec": {"name": "a"}, "extra": 1}))
            .unwrap();
        assert_eq!(report.violations[0].path, "extra");
    }
}
