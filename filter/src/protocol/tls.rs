//! Incremental TLS ClientHello parser (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2, RFC 6066 §3,
//! RFC 7301, draft-ietf-tls-esni).
//!
//! Fed the connection's bytes as they arrive, in pieces of any size, it reassembles the first
//! handshake message from as many TLS records as it spans and extracts what the checks need.
//! Memory is bounded: at most `max_client_hello_bytes` + 4 handshake bytes and one 5-byte record
//! header are buffered; anything larger is an error. Every read is bounds-checked.

use std::fmt;

pub const DEFAULT_MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024;
const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// Largest plaintext record fragment (RFC 8446 §5.1).
const MAX_RECORD_LEN: usize = 1 << 14;
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;

pub const EXT_SERVER_NAME: u16 = 0x0000;
pub const EXT_ALPN: u16 = 0x0010;
pub const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
pub const EXT_ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;

/// GREASE values (RFC 8701): 0x0A0A, 0x1A1A, ... 0xFAFA. Clients sprinkle them into lists to keep
/// servers tolerant; they carry no meaning and are skipped.
pub fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

/// A TLS protocol version by its wire value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TlsVersion(pub u16);

impl TlsVersion {
    pub const SSL3: TlsVersion = TlsVersion(0x0300);
    pub const TLS10: TlsVersion = TlsVersion(0x0301);
    pub const TLS11: TlsVersion = TlsVersion(0x0302);
    pub const TLS12: TlsVersion = TlsVersion(0x0303);
    pub const TLS13: TlsVersion = TlsVersion(0x0304);

    /// Parses the configuration form: "1.0", "1.1", "1.2", "1.3".
    pub fn parse(text: &str) -> Option<TlsVersion> {
        match text {
            "1.0" => Some(Self::TLS10),
            "1.1" => Some(Self::TLS11),
            "1.2" => Some(Self::TLS12),
            "1.3" => Some(Self::TLS13),
            _ => None,
        }
    }

    /// The value of `connection.tls_version` in rules ("1.2", "1.3", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SSL3 => "ssl3",
            Self::TLS10 => "1.0",
            Self::TLS11 => "1.1",
            Self::TLS12 => "1.2",
            Self::TLS13 => "1.3",
            _ => "unknown",
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.as_str() {
            "unknown" => write!(f, "0x{:04x}", self.0),
            name => f.write_str(name),
        }
    }
}

/// What a ClientHello tells about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// Version in the first record header (legacy_record_version).
    pub record_version: u16,
    /// legacy_version of the handshake message.
    pub legacy_version: u16,
    /// server_name host_name, as sent.
    pub sni: Option<String>,
    /// ALPN protocol names in the client's order; `None` when the extension is absent.
    pub alpn: Option<Vec<String>>,
    /// supported_versions without GREASE values; `None` when the extension is absent.
    pub supported_versions: Option<Vec<u16>>,
    /// An encrypted_client_hello extension (0xfe0d) is present.
    pub ech: bool,
    /// Any GREASE value was seen (cipher suites, extension types, supported versions).
    pub grease: bool,
    /// Number of cipher suites offered, GREASE included.
    pub cipher_suite_count: usize,
    /// Extension types in the order sent.
    pub extension_types: Vec<u16>,
    /// Number of TLS records the handshake message spanned.
    pub records: usize,
}

impl ClientHello {
    /// The highest version the client offers: the largest supported_versions entry when the
    /// extension is there (TLS 1.3 clients), else legacy_version.
    pub fn max_offered_version(&self) -> TlsVersion {
        self.supported_versions
            .as_ref()
            .and_then(|v| v.iter().copied().max())
            .map(TlsVersion)
            .unwrap_or(TlsVersion(self.legacy_version))
    }

    pub fn alpn_list(&self) -> &[String] {
        self.alpn.as_deref().unwrap_or(&[])
    }
}

/// Why the bytes are not an acceptable ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("TLS record type {content_type} where a handshake record was expected")]
    NotHandshakeRecord { content_type: u8 },
    #[error("TLS record version 0x{version:04x} is not 3.x")]
    UnsupportedRecordVersion { version: u16 },
    #[error("empty TLS handshake record")]
    EmptyRecord,
    #[error("TLS record of {length} bytes exceeds 16384")]
    RecordTooLong { length: usize },
    #[error("first handshake message has type {msg_type}, not ClientHello")]
    NotClientHello { msg_type: u8 },
    #[error("ClientHello of {length} bytes exceeds the {max}-byte limit")]
    TooLarge { length: usize, max: usize },
    /// Handshake bytes follow the ClientHello inside its last record.
    #[error("handshake data after the ClientHello")]
    TrailingData,
    /// The stream ended before the ClientHello did.
    #[error("connection data ended inside the ClientHello")]
    Truncated,
    #[error("malformed ClientHello: {field}")]
    Malformed { field: &'static str },
    #[error("ClientHello repeats extension 0x{ext_type:04x}")]
    DuplicateExtension { ext_type: u16 },
    #[error("ClientHello server_name is not a host name")]
    InvalidServerName,
}

impl TlsError {
    /// Short reason for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            TlsError::NotHandshakeRecord { .. } => "tls_not_handshake",
            TlsError::UnsupportedRecordVersion { .. } => "tls_bad_record_version",
            TlsError::EmptyRecord => "tls_empty_record",
            TlsError::RecordTooLong { .. } => "tls_record_too_long",
            TlsError::NotClientHello { .. } => "tls_not_client_hello",
            TlsError::TooLarge { .. } => "tls_client_hello_too_large",
            TlsError::TrailingData => "tls_trailing_data",
            TlsError::Truncated => "tls_truncated",
            TlsError::Malformed { .. } => "tls_malformed",
            TlsError::DuplicateExtension { .. } => "tls_duplicate_extension",
            TlsError::InvalidServerName => "tls_invalid_sni",
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Reading,
    Done(ClientHello),
    Failed(TlsError),
}

/// Reassembles and parses the ClientHello from successive reads.
#[derive(Debug, Clone)]
pub struct ClientHelloParser {
    max_hello: usize,
    header: [u8; RECORD_HEADER_LEN],
    header_len: usize,
    record_remaining: usize,
    record_version: Option<u16>,
    records: usize,
    handshake: Vec<u8>,
    consumed: usize,
    state: State,
}

impl Default for ClientHelloParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_CLIENT_HELLO_BYTES)
    }
}

impl ClientHelloParser {
    /// `max_client_hello_bytes` bounds the handshake message body (and so the buffer).
    pub fn new(max_client_hello_bytes: usize) -> Self {
        ClientHelloParser {
            max_hello: max_client_hello_bytes,
            header: [0; RECORD_HEADER_LEN],
            header_len: 0,
            record_remaining: 0,
            record_version: None,
            records: 0,
            handshake: Vec::new(),
            consumed: 0,
            state: State::Reading,
        }
    }

    /// Feeds the next bytes of the connection. `Ok(None)`: more bytes needed. `Ok(Some)`: the
    /// ClientHello is complete (bytes after its last record are not looked at; see
    /// [`consumed`](Self::consumed)). Once complete or failed, further calls return the same.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<&ClientHello>, TlsError> {
        if let State::Reading = self.state {
            if let Err(e) = self.consume(data) {
                self.handshake = Vec::new();
                self.state = State::Failed(e);
            }
        }
        match &self.state {
            State::Reading => Ok(None),
            State::Done(hello) => Ok(Some(hello)),
            State::Failed(e) => Err(e.clone()),
        }
    }

    /// The stream ended (or the caller gives up): the ClientHello, or why there is none.
    pub fn finish(&mut self) -> Result<&ClientHello, TlsError> {
        if let State::Reading = self.state {
            self.handshake = Vec::new();
            self.state = State::Failed(TlsError::Truncated);
        }
        match &self.state {
            State::Done(hello) => Ok(hello),
            State::Failed(e) => Err(e.clone()),
            State::Reading => Err(TlsError::Truncated),
        }
    }

    /// Bytes of the stream that belong to the ClientHello's records (taken so far).
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// Bytes currently held; never more than `max_client_hello_bytes + 4`.
    pub fn buffered(&self) -> usize {
        self.handshake.len()
    }

    fn consume(&mut self, mut data: &[u8]) -> Result<(), TlsError> {
        while !data.is_empty() {
            if self.header_len < RECORD_HEADER_LEN {
                let want = RECORD_HEADER_LEN - self.header_len;
                let (take, rest) = data.split_at(want.min(data.len()));
                if let Some(dst) = self
                    .header
                    .get_mut(self.header_len..self.header_len + take.len())
                {
                    dst.copy_from_slice(take);
                }
                self.header_len += take.len();
                self.consumed += take.len();
                data = rest;
                if self.header_len == RECORD_HEADER_LEN {
                    self.start_record()?;
                }
                continue;
            }
            let (take, rest) = data.split_at(self.record_remaining.min(data.len()));
            self.handshake.extend_from_slice(take);
            self.record_remaining -= take.len();
            self.consumed += take.len();
            data = rest;
            self.check_handshake_header()?;
            if self.record_remaining == 0 {
                self.header_len = 0;
                if let Some(body_len) = self.declared_len() {
                    let complete = HANDSHAKE_HEADER_LEN + body_len;
                    if self.handshake.len() > complete {
                        return Err(TlsError::TrailingData);
                    }
                    if self.handshake.len() == complete {
                        let body = self.handshake.get(HANDSHAKE_HEADER_LEN..).unwrap_or(&[]);
                        let record_version = self.record_version.unwrap_or(0);
                        let hello = parse_client_hello_body(body, record_version, self.records)?;
                        self.handshake = Vec::new();
                        self.state = State::Done(hello);
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    fn start_record(&mut self) -> Result<(), TlsError> {
        let [content_type, major, minor, len_hi, len_lo] = self.header;
        if content_type != CONTENT_TYPE_HANDSHAKE {
            return Err(TlsError::NotHandshakeRecord { content_type });
        }
        let version = u16::from_be_bytes([major, minor]);
        if major != 0x03 {
            return Err(TlsError::UnsupportedRecordVersion { version });
        }
        let length = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        if length == 0 {
            return Err(TlsError::EmptyRecord);
        }
        if length > MAX_RECORD_LEN {
            return Err(TlsError::RecordTooLong { length });
        }
        let max_total = HANDSHAKE_HEADER_LEN + self.max_hello;
        if self.handshake.len() + length > max_total {
            return Err(TlsError::TooLarge {
                length: (self.handshake.len() + length).saturating_sub(HANDSHAKE_HEADER_LEN),
                max: self.max_hello,
            });
        }
        self.record_version.get_or_insert(version);
        self.records += 1;
        self.record_remaining = length;
        Ok(())
    }

    fn declared_len(&self) -> Option<usize> {
        match self.handshake.get(..HANDSHAKE_HEADER_LEN)? {
            [_, a, b, c] => Some(usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c)),
            _ => None,
        }
    }

    /// Refuses the message as soon as its type or declared length is known to be wrong.
    fn check_handshake_header(&self) -> Result<(), TlsError> {
        if let Some(&msg_type) = self.handshake.first() {
            if msg_type != HANDSHAKE_CLIENT_HELLO {
                return Err(TlsError::NotClientHello { msg_type });
            }
        }
        if let Some(length) = self.declared_len() {
            if length > self.max_hello {
                return Err(TlsError::TooLarge {
                    length,
                    max: self.max_hello,
                });
            }
        }
        Ok(())
    }
}

/// Parses a complete stream prefix in one go (tests, tools).
pub fn parse_client_hello(
    bytes: &[u8],
    max_client_hello_bytes: usize,
) -> Result<ClientHello, TlsError> {
    let mut parser = ClientHelloParser::new(max_client_hello_bytes);
    parser.feed(bytes)?;
    parser.finish().cloned()
}

/// Bounds-checked big-endian reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], TlsError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(TlsError::Malformed { field })?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(TlsError::Malformed { field })?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, TlsError> {
        Ok(*self
            .take(1, field)?
            .first()
            .ok_or(TlsError::Malformed { field })?)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, TlsError> {
        match self.take(2, field)? {
            [a, b] => Ok(u16::from_be_bytes([*a, *b])),
            _ => Err(TlsError::Malformed { field }),
        }
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, field: &'static str) -> Result<&'a [u8], TlsError> {
        let len = usize::from(self.u8(field)?);
        self.take(len, field)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, field: &'static str) -> Result<&'a [u8], TlsError> {
        let len = usize::from(self.u16(field)?);
        self.take(len, field)
    }
}

fn parse_client_hello_body(
    body: &[u8],
    record_version: u16,
    records: usize,
) -> Result<ClientHello, TlsError> {
    let mut r = Reader::new(body);
    let legacy_version = r.u16("legacy_version")?;
    if legacy_version >> 8 != 0x03 {
        return Err(TlsError::Malformed {
            field: "legacy_version",
        });
    }
    r.take(32, "random")?;
    let session_id = r.vec8("legacy_session_id")?;
    if session_id.len() > 32 {
        return Err(TlsError::Malformed {
            field: "legacy_session_id",
        });
    }
    let suites = r.vec16("cipher_suites")?;
    if suites.len() < 2 || suites.len() % 2 != 0 {
        return Err(TlsError::Malformed {
            field: "cipher_suites",
        });
    }
    let mut grease = suites
        .chunks_exact(2)
        .any(|c| matches!(c, [a, b] if is_grease(u16::from_be_bytes([*a, *b]))));
    let compression = r.vec8("legacy_compression_methods")?;
    if compression.is_empty() {
        return Err(TlsError::Malformed {
            field: "legacy_compression_methods",
        });
    }

    let mut hello = ClientHello {
        record_version,
        legacy_version,
        sni: None,
        alpn: None,
        supported_versions: None,
        ech: false,
        grease: false,
        cipher_suite_count: suites.len() / 2,
        extension_types: Vec::new(),
        records,
    };
    // A ClientHello without extensions is legal before TLS 1.3.
    if r.is_empty() {
        hello.grease = grease;
        return Ok(hello);
    }
    let extensions = r.vec16("extensions")?;
    if !r.is_empty() {
        return Err(TlsError::Malformed {
            field: "extensions length",
        });
    }
    let mut ext = Reader::new(extensions);
    while !ext.is_empty() {
        let ext_type = ext.u16("extension type")?;
        let data = ext.vec16("extension data")?;
        if is_grease(ext_type) {
            grease = true;
        } else if hello.extension_types.contains(&ext_type) {
            return Err(TlsError::DuplicateExtension { ext_type });
        }
        hello.extension_types.push(ext_type);
        match ext_type {
            EXT_SERVER_NAME => hello.sni = parse_server_name(data)?,
            EXT_ALPN => hello.alpn = Some(parse_alpn(data)?),
            EXT_SUPPORTED_VERSIONS => {
                let (versions, saw_grease) = parse_supported_versions(data)?;
                grease |= saw_grease;
                hello.supported_versions = Some(versions);
            }
            EXT_ENCRYPTED_CLIENT_HELLO => hello.ech = true,
            _ => {}
        }
    }
    hello.grease = grease;
    Ok(hello)
}

fn parse_server_name(data: &[u8]) -> Result<Option<String>, TlsError> {
    let mut outer = Reader::new(data);
    let list = outer.vec16("server_name list")?;
    if !outer.is_empty() || list.is_empty() {
        return Err(TlsError::Malformed {
            field: "server_name list",
        });
    }
    let mut r = Reader::new(list);
    let mut host = None;
    while !r.is_empty() {
        let name_type = r.u8("server_name type")?;
        let name = r.vec16("server_name")?;
        if name_type != 0 {
            continue; // only host_name (0) is defined; others are skipped as RFC 6066 allows
        }
        if host.is_some() {
            return Err(TlsError::Malformed {
                field: "server_name repeats host_name",
            });
        }
        if !is_valid_sni(name) {
            return Err(TlsError::InvalidServerName);
        }
        host = Some(String::from_utf8_lossy(name).into_owned());
    }
    Ok(host)
}

/// A DNS host name (letters, digits, '-', '_', '.'), 1 to 255 bytes. Anything else in SNI is
/// either an attack on a parser further on or not a host a rule could name.
fn is_valid_sni(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse_alpn(data: &[u8]) -> Result<Vec<String>, TlsError> {
    let mut outer = Reader::new(data);
    let list = outer.vec16("alpn list")?;
    if !outer.is_empty() || list.is_empty() {
        return Err(TlsError::Malformed { field: "alpn list" });
    }
    let mut r = Reader::new(list);
    let mut names = Vec::new();
    while !r.is_empty() {
        let name = r.vec8("alpn protocol")?;
        if name.is_empty() {
            return Err(TlsError::Malformed {
                field: "alpn protocol",
            });
        }
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    Ok(names)
}

fn parse_supported_versions(data: &[u8]) -> Result<(Vec<u16>, bool), TlsError> {
    let mut outer = Reader::new(data);
    let list = outer.vec8("supported_versions")?;
    if !outer.is_empty() || list.len() < 2 || list.len() % 2 != 0 {
        return Err(TlsError::Malformed {
            field: "supported_versions",
        });
    }
    let mut versions = Vec::with_capacity(list.len() / 2);
    let mut grease = false;
    for pair in list.chunks_exact(2) {
        if let [a, b] = pair {
            let v = u16::from_be_bytes([*a, *b]);
            if is_grease(v) {
                grease = true;
            } else {
                versions.push(v);
            }
        }
    }
    Ok((versions, grease))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_values() {
        let all: Vec<u16> = (0..=0xffffu16).filter(|v| is_grease(*v)).collect();
        assert_eq!(all.len(), 16);
        assert_eq!(all.first(), Some(&0x0a0a));
        assert_eq!(all.last(), Some(&0xfafa));
        assert!(!is_grease(0x0a1a));
        assert!(!is_grease(0x0304));
    }

    #[test]
    fn versions_render_for_rules() {
        assert_eq!(TlsVersion::TLS13.as_str(), "1.3");
        assert_eq!(TlsVersion::parse("1.2"), Some(TlsVersion::TLS12));
        assert_eq!(TlsVersion::parse("1.4"), None);
        assert_eq!(TlsVersion(0x7f1c).to_string(), "0x7f1c");
        assert!(TlsVersion::TLS13 > TlsVersion::TLS12);
    }
}
