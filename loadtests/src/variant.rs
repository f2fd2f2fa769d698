//! Builds a second, distinct version of a component from the same bytes, for
//! the hot-swap scenario: a custom section appended to a component (or core
//! module) changes its content hash, and so its version, without changing
//! what it does. Custom sections are allowed anywhere and ignored by
//! execution.

/// Custom sections have id 0 in both core modules and components.
const CUSTOM_SECTION_ID: u8 = 0x00;

/// `wasm` with a custom section `name` holding `payload` appended:
/// `0x00`, the section size (LEB128), then the name as a LEB128 length and
/// its bytes, then the payload.
pub fn with_custom_section(wasm: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(5 + name.len() + payload.len());
    write_leb128(&mut content, name.len() as u64);
    content.extend_from_slice(name.as_bytes());
    content.extend_from_slice(payload);

    let mut out = Vec::with_capacity(wasm.len() + 6 + content.len());
    out.extend_from_slice(wasm);
    out.push(CUSTOM_SECTION_ID);
    write_leb128(&mut out, content.len() as u64);
    out.extend_from_slice(&content);
    out
}

/// Unsigned LEB128: seven bits per byte, low first, high bit = more follows.
pub fn write_leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn leb(value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write_leb128(&mut out, value);
        out
    }

    /// Reads an unsigned LEB128 at `*at`, advancing it.
    fn read_leb128(bytes: &[u8], at: &mut usize) -> u64 {
        let (mut value, mut shift) = (0u64, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    #[test]
    fn leb128_matches_the_spec_examples() {
        assert_eq!(leb(0), [0x00]);
        assert_eq!(leb(127), [0x7f]);
        assert_eq!(leb(128), [0x80, 0x01]);
        assert_eq!(leb(300), [0xac, 0x02]);
        assert_eq!(leb(624_485), [0xe5, 0x8e, 0x26]);
    }

    #[test]
    fn the_section_is_appended_after_the_original_bytes() {
        let original = b"\0asm\x0d\x00\x01\x00".to_vec();
        let variant = with_custom_section(&original, "switchyard-loadtest", b"v2");
        assert_eq!(&variant[..original.len()], original.as_slice());
        let mut at = original.len();
        assert_eq!(variant[at], 0x00);
        at += 1;
        let size = read_leb128(&variant, &mut at) as usize;
        assert_eq!(at + size, variant.len(), "the size covers exactly the rest");
        let name_len = read_leb128(&variant, &mut at) as usize;
        assert_eq!(&variant[at..at + name_len], b"switchyard-loadtest");
        assert_eq!(&variant[at + name_len..], b"v2");
    }

    #[test]
    fn a_large_payload_gets_a_multi_byte_size() {
        let payload = vec![7u8; 200];
        let variant = with_custom_section(b"", "x", &payload);
        // size = 1 (name length) + 1 (name) + 200 = 202 → two LEB128 bytes.
        assert_eq!(&variant[..3], &[0x00, 0xca, 0x01]);
        assert_eq!(variant.len(), 3 + 202);
    }
}
