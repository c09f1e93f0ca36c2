//! Multi-document YAML files as JSON values, each document with its place in the file, so errors
//! and rewrites can point at it.

use std::path::{Path, PathBuf};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: document {index} (line {line}): {message}")]
    Parse {
        path: PathBuf,
        index: usize,
        line: usize,
        message: String,
    },
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    pub path: PathBuf,
    /// 0-based position among the non-empty documents of the file.
    pub index: usize,
    /// 1-based line where the document's text starts.
    pub line: usize,
    /// The document's own text (without the `---` separator).
    pub text: String,
    pub value: Value,
}

impl Document {
    /// `file:line (Kind name)` for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}:{} ({} {})",
            self.path.display(),
            self.line,
            self.value["kind"].as_str().unwrap_or("?"),
            self.value["metadata"]["name"].as_str().unwrap_or("?")
        )
    }

    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }
}

/// Splits on `---` lines, keeping each document's text so it can be rewritten in place.
pub fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            documents.push((start_line, std::mem::take(&mut current)));
            start_line = number + 2;
        } else {
            current.push_str(line);
        }
    }
    documents.push((start_line, current));
    documents
}

pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<Document>, YamlError> {
    let mut documents = Vec::new();
    for (line, chunk) in split_documents(text) {
        let value: Value = serde_saphyr::from_str(&chunk).map_err(|e| YamlError::Parse {
            path: path.to_path_buf(),
            index: documents.len(),
            line,
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue; // comments only, or an empty document
        }
        documents.push(Document {
            path: path.to_path_buf(),
            index: documents.len(),
            line,
            text: chunk,
            value,
        });
    }
    Ok(documents)
}

pub fn load_documents(path: &Path) -> Result<Vec<Document>, YamlError> {
    let text = std::fs::read_to_string(path).map_err(|source| YamlError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_documents(path, &text)
}

/// Every `*.yaml`/`*.yml` file under `dir`, sorted, so messages and results are stable.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_lines() {
        let text = "# head\na: 1\n---\n# only a comment\n---\nb: 2\nc: [x]\n";
        let docs = parse_documents(Path::new("f.yaml"), text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!((docs[0].line, docs[0].value["a"].as_i64()), (1, Some(1)));
        assert_eq!((docs[1].index, docs[1].line), (1, 6));
        assert_eq!(docs[1].value["c"][0], "x");
    }

    #[test]
    fn parse_error_names_file_and_line() {
        let err = parse_documents(Path::new("bad.yaml"), "a: 1\n---\nb: [1, 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.yaml: document 1 (line 3)"), "{err}");
    }
}
