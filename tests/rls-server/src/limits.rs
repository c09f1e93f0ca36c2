//! Limitador's limits file: a YAML list of limits, as `limitador-server` reads it.
//!
//! ```yaml
//! - namespace: egress            # the RLS domain
//!   name: openai-per-namespace   # optional; shows in X-RateLimit-Limit
//!   max_value: 100
//!   seconds: 60
//!   conditions: ["size(descriptors) > 0 && descriptors[0]['limit'] == 'openai-per-namespace'"]
//!   variables: ["descriptors[0]['source.namespace']"]
//! ```

use anyhow::Context as _;
use limitador::limit::Limit;

/// Parses a limits file. Conditions and variables are CEL and are compiled here, so a bad
/// expression is an error naming it.
pub fn load_limits(yaml: &str) -> anyhow::Result<Vec<Limit>> {
    serde_saphyr::from_str::<Vec<Limit>>(yaml).context("reading the limits file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_generated_shape() {
        let limits = load_limits(
            r#"
- namespace: egress
  name: openai
  max_value: 100
  seconds: 60
  conditions:
    - "size(descriptors) > 0 && descriptors[0]['limit'] == 'openai'"
  variables:
    - "descriptors[0]['source.namespace']"
"#,
        )
        .unwrap();
        assert_eq!(limits.len(), 1);
        let limit = &limits[0];
        assert_eq!(limit.namespace().as_ref(), "egress");
        assert_eq!((limit.max_value(), limit.seconds()), (100, 60));
        assert_eq!(limit.name(), Some("openai"));
        assert!(limit
            .variables()
            .contains("descriptors[0]['source.namespace']"));
    }

    #[test]
    fn bad_expressions_are_errors() {
        let err = load_limits(
            "- namespace: e\n  max_value: 1\n  seconds: 1\n  conditions: [\"descriptors[\"]\n  variables: []\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("limits file"), "{err:#}");
    }
}
