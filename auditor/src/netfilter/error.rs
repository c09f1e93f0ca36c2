use thiserror::Error;

/// Why a rule dump could not be read. Every variant names the dump and, where there is one, the line.
#[derive(Debug, Error)]
pub enum DumpError {
    #[error("{source_name}:{line}: {message}")]
    Syntax {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error("{source_name}: {message}")]
    Format {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: not valid nft JSON: {error}")]
    Json {
        source_name: String,
        #[source]
        error: serde_json::Error,
    },
}

impl DumpError {
    pub(crate) fn syntax(source_name: &str, line: usize, message: impl Into<String>) -> DumpError {
        DumpError::Syntax {
            source_name: source_name.to_string(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn format(source_name: &str, message: impl Into<String>) -> DumpError {
        DumpError::Format {
            source_name: source_name.to_string(),
            message: message.into(),
        }
    }
}
