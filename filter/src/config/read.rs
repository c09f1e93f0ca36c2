//! Typed reading of [`Json`] with the behaviour of a strict deserialiser: every object lists the
//! fields it knows, an unknown field is an error (as `deny_unknown_fields`), `null` counts as
//! absent, and every error carries the JSON path of the offending value.

use super::error::{ConfigError, ConfigErrorKind, ConfigPath};
use super::json::Json;

/// A string value that may also be written as a JSON integer (`ports: [443]` as well as
/// `ports: ["443"]`), since YAML-to-JSON conversion of a pluginConfig often yields numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar {
    pub text: String,
    pub was_number: bool,
}

impl Scalar {
    pub fn text(text: &str) -> Self {
        Self {
            text: text.to_string(),
            was_number: false,
        }
    }

    /// The value as it appeared in the document, for error messages.
    pub fn quoted(&self) -> String {
        if self.was_number {
            self.text.clone()
        } else {
            crate::text::quote(&self.text)
        }
    }
}

#[inline(never)]
fn wrong_type(path: &ConfigPath, expected: &str, found: &Json) -> ConfigError {
    ConfigError::new(
        path.clone(),
        ConfigErrorKind::Syntax(format!("expected {expected}, found {}", found.kind())),
    )
}

/// The members of one JSON object, consumed field by field.
pub struct ObjectReader<'a> {
    members: &'a [(String, Json)],
    used: Vec<bool>,
    known: &'static [&'static str],
    path: ConfigPath,
}

impl<'a> ObjectReader<'a> {
    /// `known` lists every field name of this object, for the unknown-field error.
    #[inline(never)]
    pub fn new(
        value: &'a Json,
        path: &ConfigPath,
        known: &'static [&'static str],
    ) -> Result<Self, ConfigError> {
        match value {
            Json::Object(members) => Ok(Self {
                members,
                used: vec![false; members.len()],
                known,
                path: path.clone(),
            }),
            other => Err(wrong_type(path, "an object", other)),
        }
    }

    pub fn path(&self) -> &ConfigPath {
        &self.path
    }

    /// The value of `key`, unless absent or `null`.
    #[inline(never)]
    pub fn take(&mut self, key: &str) -> Option<(&'a Json, ConfigPath)> {
        let at = self.members.iter().position(|(k, _)| k == key)?;
        if let Some(used) = self.used.get_mut(at) {
            *used = true;
        }
        match self.members.get(at) {
            Some((_, Json::Null)) | None => None,
            Some((_, value)) => Some((value, self.path.field(key))),
        }
    }

    #[inline(never)]
    pub fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        self.take(key)
            .map(|(v, path)| read_string(v, &path))
            .transpose()
    }

    #[inline(never)]
    pub fn required_string(&mut self, key: &'static str) -> Result<String, ConfigError> {
        self.string(key)?.ok_or_else(|| {
            ConfigError::new(
                self.path.clone(),
                ConfigErrorKind::Syntax(format!("missing field `{key}`")),
            )
        })
    }

    #[inline(never)]
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some((Json::Bool(b), _)) => Ok(Some(*b)),
            Some((other, path)) => Err(wrong_type(&path, "a boolean", other)),
        }
    }

    /// A non-negative integer no larger than `u32::MAX`.
    #[inline(never)]
    pub fn u32(&mut self, key: &str) -> Result<Option<u32>, ConfigError> {
        self.take(key)
            .map(|(v, path)| read_u32(v, &path))
            .transpose()
    }

    #[inline(never)]
    pub fn required_u32(&mut self, key: &'static str) -> Result<u32, ConfigError> {
        self.u32(key)?.ok_or_else(|| {
            ConfigError::new(
                self.path.clone(),
                ConfigErrorKind::Syntax(format!("missing field `{key}`")),
            )
        })
    }

    /// An object field read by `item`, unless absent or `null`.
    pub fn object<T>(
        &mut self,
        key: &str,
        item: impl Fn(&'a Json, &ConfigPath) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        self.take(key).map(|(v, path)| item(v, &path)).transpose()
    }

    pub fn list<T>(
        &mut self,
        key: &str,
        item: impl Fn(&'a Json, &ConfigPath) -> Result<T, ConfigError>,
    ) -> Result<Option<Vec<T>>, ConfigError> {
        let Some((value, path)) = self.take(key) else {
            return Ok(None);
        };
        let Json::Array(items) = value else {
            return Err(wrong_type(&path, "a list", value));
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, value) in items.iter().enumerate() {
            out.push(item(value, &path.index(i))?);
        }
        Ok(Some(out))
    }

    #[inline(never)]
    pub fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        self.list(key, read_string)
    }

    #[inline(never)]
    pub fn scalars(&mut self, key: &str) -> Result<Option<Vec<Scalar>>, ConfigError> {
        self.list(key, read_scalar)
    }

    /// Fails on the first member (in document order) that no `take` asked for.
    #[inline(never)]
    pub fn finish(self) -> Result<(), ConfigError> {
        let unknown = self
            .members
            .iter()
            .zip(&self.used)
            .find(|(_, used)| !**used)
            .map(|((key, _), _)| key);
        match unknown {
            None => Ok(()),
            Some(key) => {
                let expected: Vec<String> = self.known.iter().map(|k| format!("`{k}`")).collect();
                Err(ConfigError::new(
                    self.path.field(key),
                    ConfigErrorKind::Syntax(format!(
                        "unknown field `{key}`, expected one of {}",
                        expected.join(", ")
                    )),
                ))
            }
        }
    }
}

#[inline(never)]
pub fn read_string(value: &Json, path: &ConfigPath) -> Result<String, ConfigError> {
    match value {
        Json::String(s) => Ok(s.clone()),
        other => Err(wrong_type(path, "a string", other)),
    }
}

/// A JSON integer in `0..=u32::MAX`.
#[inline(never)]
pub fn read_u32(value: &Json, path: &ConfigPath) -> Result<u32, ConfigError> {
    match value {
        Json::Number(n) => n.parse::<u32>().map_err(|_| {
            ConfigError::new(
                path.clone(),
                ConfigErrorKind::Syntax(format!("{n} is not an integer in 0..={}", u32::MAX)),
            )
        }),
        other => Err(wrong_type(path, "an integer", other)),
    }
}

/// A string, or an integer kept as its text (`ports: [443]`).
#[inline(never)]
pub fn read_scalar(value: &Json, path: &ConfigPath) -> Result<Scalar, ConfigError> {
    match value {
        Json::String(s) => Ok(Scalar::text(s)),
        Json::Number(n) if n.bytes().all(|b| b.is_ascii_digit() || b == b'-') => Ok(Scalar {
            text: n.clone(),
            was_number: true,
        }),
        other => Err(wrong_type(path, "a string or an integer", other)),
    }
}
