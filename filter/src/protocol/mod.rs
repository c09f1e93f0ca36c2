//! Protocol checks: HTTP sanity, protocol detection, TLS ClientHello parsing.
