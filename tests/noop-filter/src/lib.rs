//! no-op filter
