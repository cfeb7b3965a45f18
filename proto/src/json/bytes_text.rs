//! Octets as text: lowercase hex out, hex and base64 (RFC 4648, standard alphabet, padding
//! optional) in. Hand-written because they are a few lines each and sit on the JSON hot path
//! (Cx User-Data, unknown AVPs).

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `data` as lowercase hex.
pub(crate) fn push_hex(out: &mut String, data: &[u8]) {
    out.reserve(data.len() * 2);
    for &b in data {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0F)]));
    }
}

#[inline]
fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex (either case, even length, no separators) into `out`; on error, the index
/// of the first bad character (or the length, for an odd count).
pub(crate) fn decode_hex(text: &[u8], out: &mut Vec<u8>) -> Result<(), usize> {
    if text.len() & 1 != 0 {
        return Err(text.len());
    }
    out.reserve(text.len() / 2);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let (Some(&a), Some(&b)) = (pair.first(), pair.get(1)) else {
            return Err(i * 2);
        };
        let hi = nibble(a).ok_or(i * 2)?;
        let lo = nibble(b).ok_or(i * 2 + 1)?;
        out.push(hi << 4 | lo);
    }
    Ok(())
}

#[inline]
fn sextet(c: u8) -> Option<u32> {
    Some(u32::from(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    }))
}

/// Decodes standard base64 (padding optional, no whitespace) into `out`; on error, the index
/// of the first bad character.
pub(crate) fn decode_base64(text: &[u8], out: &mut Vec<u8>) -> Result<(), usize> {
    // Strip up to two '=' of padding; then the length must not leave a single dangling char.
    let mut body = text;
    if text.len() & 3 == 0 {
        for _ in 0..2 {
            if let Some((&b'=', rest)) = body.split_last() {
                body = rest;
            }
        }
    }
    if body.len() % 4 == 1 {
        return Err(body.len());
    }
    out.reserve(body.len() / 4 * 3 + 2);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for (i, &c) in body.iter().enumerate() {
        acc = acc << 6 | sextet(c).ok_or(i)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero (canonical encoding), else the text was not made by an encoder.
    if acc != 0 {
        return Err(body.len().saturating_sub(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_both_ways() {
        let mut s = String::new();
        push_hex(&mut s, &[0, 0x7F, 0xAB, 0xFF]);
        assert_eq!(s, "007fabff");
        let mut v = Vec::new();
        decode_hex(b"007FabfF", &mut v).unwrap();
        assert_eq!(v, [0, 0x7F, 0xAB, 0xFF]);
        assert_eq!(decode_hex(b"abc", &mut Vec::new()), Err(3));
        assert_eq!(decode_hex(b"0g", &mut Vec::new()), Err(1));
        assert_eq!(decode_hex(b"x0", &mut Vec::new()), Err(0));
        assert_eq!(decode_hex(b"", &mut Vec::new()), Ok(()));
    }

    #[test]
    fn base64_vectors() {
        // RFC 4648 §10 test vectors, with and without padding.
        let cases: [(&str, &str); 7] = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            let mut v = Vec::new();
            decode_base64(enc.as_bytes(), &mut v).unwrap();
            assert_eq!(v, plain.as_bytes(), "{enc}");
            let mut v = Vec::new();
            decode_base64(enc.trim_end_matches('=').as_bytes(), &mut v).unwrap();
            assert_eq!(v, plain.as_bytes(), "{enc} unpadded");
        }
        let mut v = Vec::new();
        decode_base64(b"/+8=", &mut v).unwrap();
        assert_eq!(v, [0xFF, 0xEF]);
        assert_eq!(decode_base64(b"Zm9v!A", &mut Vec::new()), Err(4));
        assert_eq!(decode_base64(b"Z", &mut Vec::new()), Err(1));
        assert_eq!(
            decode_base64(b"Zh==", &mut Vec::new()),
            Err(1),
            "non-zero pad bits"
        );
        assert_eq!(
            decode_base64(b"Zg=", &mut Vec::new()),
            Err(2),
            "'=' mid-text"
        );
    }
}
