//! Ports (`ports`, `notPorts`, `destination.port`): exact numbers only, as in Istio.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("{0} is not a port")]
    NotAPort(String),
}

/// Parses a port given as text (`"443"`); the error quotes the input as JSON would.
#[inline(never)]
pub fn parse_port(raw: &str) -> Result<u16, PortError> {
    let not_a_port = || PortError::NotAPort(crate::text::quote(raw));
    if raw.is_empty() || raw.len() > 5 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_port());
    }
    match raw.parse::<u16>() {
        Ok(0) | Err(_) => Err(not_a_port()),
        Ok(port) => Ok(port),
    }
}

/// A list of ports, ORed.
#[derive(Debug, Clone, Default)]
pub struct PortSet {
    ports: Vec<u16>,
}

impl PortSet {
    #[inline(never)]
    pub fn new(ports: impl IntoIterator<Item = u16>) -> Self {
        let mut ports: Vec<u16> = ports.into_iter().collect();
        crate::text::sort_by(&mut ports, |a, b| a < b);
        ports.dedup();
        Self { ports }
    }

    pub fn contains(&self, port: u16) -> bool {
        self.ports.binary_search(&port).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("443"), Ok(443));
        assert_eq!(parse_port("65535"), Ok(65535));
        for bad in ["0", "65536", "https", "", "-1", "44 3", "+443", "123456"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_port("https").unwrap_err().to_string(),
            "\"https\" is not a port"
        );
        let set = PortSet::new([443, 80, 443]);
        assert!(set.contains(80) && set.contains(443) && !set.contains(8080));
    }
}
