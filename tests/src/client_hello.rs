//! A TLS ClientHello as a current client sends it (RFC 8446 §4.1.2), for replaying TLS
//! passthrough connections of which only the server name is known.

fn with_u16_len(body: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(body.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(body);
    out
}

fn extension(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = kind.to_be_bytes().to_vec();
    out.extend(with_u16_len(body));
    out
}

/// One TLS record holding a ClientHello for `server_name`: TLS 1.3 and 1.2 offered
/// (`supported_versions`), an X25519 key share, no ALPN.
pub fn client_hello(server_name: &str) -> Vec<u8> {
    // server_name: a list of one host_name entry.
    let mut name_entry = vec![0u8];
    name_entry.extend(with_u16_len(server_name.as_bytes()));
    let mut extensions = extension(0x0000, &with_u16_len(&name_entry));
    // supported_groups: x25519, secp256r1.
    extensions.extend(extension(0x000a, &with_u16_len(&[0x00, 0x1d, 0x00, 0x17])));
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256.
    extensions.extend(extension(
        0x000d,
        &with_u16_len(&[0x04, 0x03, 0x08, 0x04, 0x04, 0x01]),
    ));
    // supported_versions: TLS 1.3, TLS 1.2 (a one-byte length).
    extensions.extend(extension(0x002b, &[4, 0x03, 0x04, 0x03, 0x03]));
    // key_share: one X25519 share.
    let mut share = vec![0x00, 0x1d];
    share.extend(with_u16_len(&[0x42; 32]));
    extensions.extend(extension(0x0033, &with_u16_len(&share)));

    let mut hello = vec![0x03, 0x03];
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(32);
    hello.extend_from_slice(&[0x11; 32]); // legacy session id
                                          // TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.
    hello.extend(with_u16_len(&[0x13, 0x01, 0x13, 0x02, 0xc0, 0x2b]));
    hello.extend_from_slice(&[1, 0]); // compression: null
    hello.extend(with_u16_len(&extensions));

    let length = u32::try_from(hello.len()).unwrap_or(0).to_be_bytes();
    let mut handshake = vec![0x01, length[1], length[2], length[3]];
    handshake.extend(hello);

    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(with_u16_len(&handshake));
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_and_handshake_lengths_add_up() {
        let bytes = client_hello("api.github.com");
        assert_eq!(&bytes[..3], &[0x16, 0x03, 0x01]);
        let record_len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        assert_eq!(record_len, bytes.len() - 5);
        assert_eq!(bytes[5], 1, "ClientHello");
        let hs_len =
            usize::from(bytes[6]) << 16 | usize::from(bytes[7]) << 8 | usize::from(bytes[8]);
        assert_eq!(hs_len, bytes.len() - 9);
        let name = b"api.github.com";
        assert!(bytes.windows(name.len()).any(|w| w == name));
    }
}
