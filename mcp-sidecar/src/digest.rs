//! Bytes written as lowercase hex, and SHA-256 digests written that way: the one spelling the
//! job store (spec digests, idempotency keys), the worker (an artifact's `sha256`) and the
//! local artifact store (download-URL signatures) share. It sits at the crate root because no
//! one of those components owns it.

use sha2::{Digest, Sha256};

/// `bytes` as lowercase hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            // Writing to a String cannot fail.
            let _ = write!(text, "{byte:02x}");
            text
        })
}

/// The SHA-256 digest of `bytes`, as lowercase hex (64 digits).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The bytes `text` spells in hex (either case), or `None` if it is not an even number of hex
/// digits.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|start| {
            let pair = text.get(start..start + 2)?;
            // from_str_radix would also take a sign ("+f").
            pair.bytes()
                .all(|digit| digit.is_ascii_hexdigit())
                .then(|| u8::from_str_radix(pair, 16).ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_written_as_the_usual_64_lowercase_digits() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hex_decodes_back_to_its_bytes_and_anything_else_is_refused() {
        let bytes = [0x00, 0x7f, 0x80, 0xff];
        assert_eq!(hex(&bytes), "007f80ff");
        assert_eq!(decode_hex("007f80ff"), Some(bytes.to_vec()));
        assert_eq!(decode_hex("007F80FF"), Some(bytes.to_vec()));
        assert_eq!(decode_hex(""), Some(vec![]));
        for bad in ["0", "zz", "+f", "0g", "é0"] {
            assert_eq!(decode_hex(bad), None, "{bad}");
        }
    }
}
