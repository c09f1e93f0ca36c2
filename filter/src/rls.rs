//! Envoy's Rate Limit Service protocol (`envoy.service.ratelimit.v3.RateLimitService`) on the
//! protobuf wire, written by hand: the filter encodes `RateLimitRequest` and decodes
//! `RateLimitResponse` without a protobuf library (the `.wasm` size budget has no room for one).
//!
//! Field numbers are those of `envoy/service/ratelimit/v3/rls.proto`,
//! `envoy/extensions/common/ratelimit/v3/ratelimit.proto` and `envoy/config/core/v3/base.proto`.
//! Encoding follows proto3 as protobuf libraries do it (fields in number order, default values
//! left out), so the bytes equal theirs. Decoding is defensive: a bounded message size, bounded
//! repeated fields, unknown fields skipped by wire type, and an error (never a panic) for
//! anything malformed.

use std::fmt;

/// The gRPC service and method the filter calls (`/<service>/<method>`).
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// Largest response the filter decodes; a rate-limit answer is a few hundred bytes.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most entries kept of each repeated field of a response (statuses, headers).
pub const MAX_REPEATED: usize = 32;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, u64::from(field << 3 | u32::from(wire_type)));
}

/// A length-delimited field; proto3 leaves an empty string or message out.
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    put_key(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A message field that is present even when empty (an element of a repeated field).
fn put_message(out: &mut Vec<u8>, field: u32, message: &[u8]) {
    put_key(out, field, LEN);
    put_varint(out, message.len() as u64);
    out.extend_from_slice(message);
}

/// One `RateLimitDescriptor.Entry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

/// Writes a `RateLimitRequest`: `domain` (1), then one `RateLimitDescriptor` (2) per
/// [`RequestEncoder::end_descriptor`], each with the `entries` (1) added before it, then
/// `hits_addend` (3) unless 0.
pub struct RequestEncoder {
    out: Vec<u8>,
    descriptor: Vec<u8>,
    entry: Vec<u8>,
}

impl RequestEncoder {
    pub fn new(domain: &str) -> Self {
        let mut out = Vec::with_capacity(128);
        put_bytes(&mut out, 1, domain.as_bytes());
        Self {
            out,
            descriptor: Vec::new(),
            entry: Vec::new(),
        }
    }

    /// Adds an entry to the descriptor being written.
    pub fn entry(&mut self, key: &str, value: &str) {
        self.entry.clear();
        put_bytes(&mut self.entry, 1, key.as_bytes());
        put_bytes(&mut self.entry, 2, value.as_bytes());
        put_message(&mut self.descriptor, 1, &self.entry);
    }

    pub fn end_descriptor(&mut self) {
        put_message(&mut self.out, 2, &self.descriptor);
        self.descriptor.clear();
    }

    pub fn finish(mut self, hits_addend: u32) -> Vec<u8> {
        if hits_addend != 0 {
            put_key(&mut self.out, 3, VARINT);
            put_varint(&mut self.out, u64::from(hits_addend));
        }
        self.out
    }
}

/// Encodes a whole `RateLimitRequest` (see [`RequestEncoder`]).
pub fn encode_request(domain: &str, descriptors: &[Vec<Entry<'_>>], hits_addend: u32) -> Vec<u8> {
    let mut encoder = RequestEncoder::new(domain);
    for entries in descriptors {
        for e in entries {
            encoder.entry(e.key, e.value);
        }
        encoder.end_descriptor();
    }
    encoder.finish(hits_addend)
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Why a response could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    TooLarge,
    Truncated,
    /// A varint longer than 10 bytes, a field number 0, or an unusable wire type.
    Malformed,
    /// A known field arrived with another wire type than the one it is declared with.
    WrongWireType,
    InvalidUtf8,
    /// More than [`MAX_REPEATED`] statuses or headers.
    TooMany,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLarge => "response larger than 64 KiB",
            Self::Truncated => "truncated message",
            Self::Malformed => "malformed protobuf",
            Self::WrongWireType => "field with an unexpected wire type",
            Self::InvalidUtf8 => "string field that is not UTF-8",
            Self::TooMany => "too many repeated entries",
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed)
    }

    /// The next field's number and wire type; `None` at the end of the message.
    fn key(&mut self) -> Result<Option<(u64, u8)>, DecodeError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(DecodeError::Malformed);
        }
        Ok(Some((field, (key & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
        self.take(len)
    }

    /// Skips a field of an unknown number. Groups (deprecated, never sent in proto3) and the
    /// unassigned wire types 6 and 7 are malformed.
    fn skip(&mut self, wire_type: u8) -> Result<(), DecodeError> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.take(4).map(drop),
            _ => Err(DecodeError::Malformed),
        }
    }
}

/// Decodes a message: `field` is called for every known field, with its reader positioned on
/// the value, unknown ones are skipped.
/// One copy of the loop for every message type (a `dyn` callback: the `.wasm` is small).
fn each_field<'a>(
    bytes: &'a [u8],
    field: &mut dyn FnMut(u64, u8, &mut Reader<'a>) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes);
    while let Some((number, wire_type)) = r.key()? {
        if !field(number, wire_type, &mut r)? {
            r.skip(wire_type)?;
        }
    }
    Ok(())
}

fn expect(wire_type: u8, expected: u8) -> Result<(), DecodeError> {
    if wire_type == expected {
        Ok(())
    } else {
        Err(DecodeError::WrongWireType)
    }
}

fn varint_field(r: &mut Reader<'_>, wire_type: u8) -> Result<u64, DecodeError> {
    expect(wire_type, VARINT)?;
    r.varint()
}

fn bytes_field<'a>(r: &mut Reader<'a>, wire_type: u8) -> Result<&'a [u8], DecodeError> {
    expect(wire_type, LEN)?;
    r.len_delimited()
}

fn string_field(r: &mut Reader<'_>, wire_type: u8) -> Result<String, DecodeError> {
    let bytes = bytes_field(r, wire_type)?;
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| DecodeError::InvalidUtf8)
}

fn push_bounded<T>(list: &mut Vec<T>, item: T) -> Result<(), DecodeError> {
    if list.len() >= MAX_REPEATED {
        return Err(DecodeError::TooMany);
    }
    list.push(item);
    Ok(())
}

/// `RateLimitResponse.Code`, kept as its number: proto3 keeps unknown enum values.
pub const CODE_UNKNOWN: u32 = 0;
pub const CODE_OK: u32 = 1;
pub const CODE_OVER_LIMIT: u32 = 2;

/// `RateLimitResponse.RateLimit`: the limit a descriptor matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentLimit {
    pub requests_per_unit: u32,
    /// `RateLimit.Unit`: 1 second, 2 minute, 3 hour, 4 day, 5 month, 6 year, 7 week.
    pub unit: u32,
    pub name: String,
}

impl CurrentLimit {
    /// The window of the unit in seconds, for the units whose length is fixed.
    pub fn window_seconds(&self) -> Option<u64> {
        match self.unit {
            1 => Some(1),
            2 => Some(60),
            3 => Some(3600),
            4 => Some(86_400),
            7 => Some(604_800),
            _ => None,
        }
    }
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescriptorStatus {
    pub code: u32,
    pub current_limit: Option<CurrentLimit>,
    pub limit_remaining: u32,
    /// `duration_until_reset` as (seconds, nanos).
    pub duration_until_reset: Option<(i64, i32)>,
}

/// What the filter uses of a `RateLimitResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RlsResponse {
    pub overall_code: u32,
    pub statuses: Vec<DescriptorStatus>,
    /// `response_headers_to_add`, as sent (keys not yet lower-cased). `request_headers_to_add`
    /// is skipped: the filter does not change the request it lets through.
    pub response_headers: Vec<(String, String)>,
    /// `raw_body`: the body of the rate-limited reply, when the service sends one.
    pub raw_body: Vec<u8>,
}

fn decode_header(bytes: &[u8]) -> Result<(String, String), DecodeError> {
    let (mut key, mut value, mut raw) = (String::new(), String::new(), Vec::new());
    each_field(bytes, &mut |number, wt, r| {
        match number {
            1 => key = string_field(r, wt)?,
            2 => value = string_field(r, wt)?,
            3 => raw = bytes_field(r, wt)?.to_vec(),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // `raw_value` carries the value when it is not a valid string.
    if value.is_empty() && !raw.is_empty() {
        value = String::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    }
    Ok((key, value))
}

fn decode_current_limit(bytes: &[u8]) -> Result<CurrentLimit, DecodeError> {
    let mut limit = CurrentLimit::default();
    each_field(bytes, &mut |number, wt, r| {
        match number {
            1 => limit.requests_per_unit = varint_field(r, wt)? as u32,
            2 => limit.unit = varint_field(r, wt)? as u32,
            3 => limit.name = string_field(r, wt)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(limit)
}

fn decode_duration(bytes: &[u8]) -> Result<(i64, i32), DecodeError> {
    let (mut seconds, mut nanos) = (0i64, 0i32);
    each_field(bytes, &mut |number, wt, r| {
        match number {
            // int64 and int32 are varints of their two's complement.
            1 => seconds = varint_field(r, wt)? as i64,
            2 => nanos = varint_field(r, wt)? as i32,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok((seconds, nanos))
}

fn decode_status(bytes: &[u8]) -> Result<DescriptorStatus, DecodeError> {
    let mut status = DescriptorStatus::default();
    each_field(bytes, &mut |number, wt, r| {
        match number {
            1 => status.code = varint_field(r, wt)? as u32,
            2 => status.current_limit = Some(decode_current_limit(bytes_field(r, wt)?)?),
            3 => status.limit_remaining = varint_field(r, wt)? as u32,
            4 => status.duration_until_reset = Some(decode_duration(bytes_field(r, wt)?)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(status)
}

/// Decodes a `RateLimitResponse` (the bare message, as the gRPC callout delivers it).
pub fn decode_response(bytes: &[u8]) -> Result<RlsResponse, DecodeError> {
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(DecodeError::TooLarge);
    }
    let mut response = RlsResponse::default();
    each_field(bytes, &mut |number, wt, r| {
        match number {
            1 => response.overall_code = varint_field(r, wt)? as u32,
            2 => push_bounded(&mut response.statuses, decode_status(bytes_field(r, wt)?)?)?,
            3 => push_bounded(
                &mut response.response_headers,
                decode_header(bytes_field(r, wt)?)?,
            )?,
            5 => response.raw_body = bytes_field(r, wt)?.to_vec(),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(response)
}

/// Whether `bytes` may parse as a protobuf message. Envoy first reads the `upstream` argument of
/// `proxy_grpc_call` as a serialized `GrpcService` and only when that fails as a cluster name,
/// so a cluster name that happens to parse would be misread. Conservative: a group start
/// counts as parseable.
pub fn may_parse_as_protobuf(bytes: &[u8]) -> bool {
    let mut r = Reader::new(bytes);
    loop {
        match r.key() {
            Ok(None) => return true,
            Ok(Some((_, 3))) => return true,
            Ok(Some((_, wire_type))) => {
                if r.skip(wire_type).is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry<'a>(key: &'a str, value: &'a str) -> Entry<'a> {
        Entry { key, value }
    }

    // Golden bytes written by an independent encoder (prost, from envoy-types' code generated
    // from the real protos): `tests/tests/rls_golden.rs` in the egress-sim crate checks that these
    // files are what that encoder produces.
    const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/rls/");

    fn golden(name: &str) -> Vec<u8> {
        std::fs::read(format!("{GOLDEN}{name}")).expect("golden file exists")
    }

    #[test]
    fn request_matches_the_golden_encodings() {
        let basic = encode_request(
            "egress",
            &[vec![
                entry("limit", "openai-per-namespace"),
                entry("source.namespace", "ml"),
                entry("destination.host", "api.openai.com"),
            ]],
            1,
        );
        assert_eq!(basic, golden("request_basic.bin"));

        // Empty values are left out of the entry, as proto3 encoders do; two descriptors; no
        // hits_addend; long strings need two-byte lengths.
        let long = "x".repeat(300);
        let edge = encode_request(
            "d",
            &[
                vec![entry("source.principal", ""), entry("k", &long)],
                vec![entry("limit", "b")],
            ],
            0,
        );
        assert_eq!(edge, golden("request_edge.bin"));
    }

    #[test]
    fn limitador_style_response_decodes() {
        let response = decode_response(&golden("response_limitador_over.bin")).unwrap();
        assert_eq!(response.overall_code, CODE_OVER_LIMIT);
        assert!(response.statuses.is_empty());
        assert_eq!(
            response.response_headers,
            vec![
                (
                    "X-RateLimit-Limit".to_string(),
                    "2, 2;w=60;name=\"per-ns\"".to_string()
                ),
                ("X-RateLimit-Remaining".to_string(), "0".to_string()),
                ("X-RateLimit-Reset".to_string(), "59".to_string()),
            ]
        );
    }

    #[test]
    fn envoy_ratelimit_style_response_decodes_and_skips_unknown_fields() {
        let response = decode_response(&golden("response_statuses.bin")).unwrap();
        assert_eq!(response.overall_code, CODE_OVER_LIMIT);
        assert_eq!(
            response.statuses,
            vec![
                DescriptorStatus {
                    code: CODE_OK,
                    current_limit: Some(CurrentLimit {
                        requests_per_unit: 1000,
                        unit: 3,
                        name: String::new(),
                    }),
                    limit_remaining: 998,
                    duration_until_reset: Some((1200, 0)),
                },
                DescriptorStatus {
                    code: CODE_OVER_LIMIT,
                    current_limit: Some(CurrentLimit {
                        requests_per_unit: 10,
                        unit: 2,
                        name: "per-ip".to_string(),
                    }),
                    limit_remaining: 0,
                    duration_until_reset: Some((41, 500_000_000)),
                },
            ]
        );
        assert_eq!(response.raw_body, b"slow down\n");
        // request_headers_to_add (4), dynamic_metadata (6) and quota (7) are skipped.
    }

    #[test]
    fn ok_response_with_defaults_decodes() {
        let response = decode_response(&golden("response_ok.bin")).unwrap();
        assert_eq!(
            response,
            RlsResponse {
                overall_code: CODE_OK,
                ..Default::default()
            }
        );
        assert_eq!(decode_response(&[]).unwrap().overall_code, CODE_UNKNOWN);
    }

    #[test]
    fn malformed_responses_are_errors() {
        let cases: [(&[u8], DecodeError); 7] = [
            (&[0x08], DecodeError::Truncated),
            (&[0x12, 0x05, 0x08], DecodeError::Truncated),
            (&[0x0a, 0x01, 0x00], DecodeError::WrongWireType),
            (&[0x00, 0x01], DecodeError::Malformed),
            (&[0x3b], DecodeError::Malformed),
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ],
                DecodeError::Malformed,
            ),
            (&[0x1a, 0x03, 0x0a, 0x01, 0xff], DecodeError::InvalidUtf8),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode_response(bytes), Err(expected), "{bytes:?}");
        }
        assert_eq!(
            decode_response(&vec![0u8; MAX_RESPONSE_BYTES + 1]),
            Err(DecodeError::TooLarge)
        );
        let mut many = Vec::new();
        for _ in 0..=MAX_REPEATED {
            many.extend_from_slice(&[0x12, 0x00]);
        }
        assert_eq!(decode_response(&many), Err(DecodeError::TooMany));
    }

    #[test]
    fn cluster_names_that_parse_as_protobuf_are_recognised() {
        assert!(!may_parse_as_protobuf(
            b"outbound|8081||limitador.limitador.svc.cluster.local"
        ));
        assert!(!may_parse_as_protobuf(b"limitador"));
        assert!(!may_parse_as_protobuf(b"ratelimit"));
        // 'h' is field 13 as a varint, 'x' its value: a valid message.
        assert!(may_parse_as_protobuf(b"hxhx"));
        assert!(may_parse_as_protobuf(b""));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_response(&bytes);
            let _ = may_parse_as_protobuf(&bytes);
        }

        #[test]
        fn decoding_mutated_responses_never_panics(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8)
        ) {
            let mut bytes = golden("response_statuses.bin");
            let len = bytes.len().max(1);
            for (at, value) in flips {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b = value;
                }
            }
            let _ = decode_response(&bytes);
        }

        #[test]
        fn encoded_requests_stay_well_formed(
            domain in "[a-z]{0,20}",
            entries in proptest::collection::vec(("[a-z.]{1,12}", "\\PC{0,40}"), 0..6),
        ) {
            let entries: Vec<Entry<'_>> = entries
                .iter()
                .map(|(k, v)| Entry { key: k, value: v })
                .collect();
            let bytes = encode_request(&domain, &[entries], 1);
            prop_assert!(may_parse_as_protobuf(&bytes));
        }
    }
}
