//! Sources: where objects come from. Each builds a [`crate::snapshot::Snapshot`]; none judges.

pub mod cluster;
pub mod files;
mod json_stream;
mod strict_strings;
mod typed_read;
