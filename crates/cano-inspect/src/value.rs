//! Showing a durable value without its type: the store keeps values encoded by the
//! workflow's codec (bincode, not self-describing), so a value is shown as text or a
//! number when its bytes are exactly that encoding, and as hex otherwise.

use cano_core::checkpoint::{Bincode, Codec};
use serde::Serialize;

/// How a value is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShownValue {
    /// The text shown.
    pub text: String,
    /// What it was read as: `text`, `number` or `hex`.
    pub read_as: &'static str,
}

/// The most bytes shown in hex; longer values say how long they are.
const HEX_LIMIT: usize = 256;

/// `bytes` as text or a number when they round-trip as one, hex otherwise.
pub fn show(bytes: &[u8]) -> ShownValue {
    if let Ok(text) = Bincode::decode::<String>(bytes)
        && Bincode::encode(&text).is_ok_and(|b| b == bytes)
        && !text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return ShownValue {
            text,
            read_as: "text",
        };
    }
    if let Ok(n) = Bincode::decode::<u64>(bytes)
        && Bincode::encode(&n).is_ok_and(|b| b == bytes)
    {
        return ShownValue {
            text: n.to_string(),
            read_as: "number",
        };
    }
    ShownValue {
        text: hex(bytes),
        read_as: "hex",
    }
}

/// Lower-case hex, cut at 256 bytes (a longer value says its length).
pub fn hex(bytes: &[u8]) -> String {
    let mut out: String = bytes
        .iter()
        .take(HEX_LIMIT)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > HEX_LIMIT {
        out.push_str(&format!("… ({} bytes)", bytes.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_and_numbers_read_back_and_the_rest_is_hex() {
        let text = Bincode::encode(&"ada@example.com".to_owned()).unwrap();
        assert_eq!(show(&text).text, "ada@example.com");
        let n = Bincode::encode(&4_000_000_000u64).unwrap();
        assert_eq!(
            show(&n),
            ShownValue {
                text: "4000000000".into(),
                read_as: "number"
            }
        );
        let shown = show(&[0xff, 0x00, 0x13]);
        assert_eq!(shown.read_as, "hex");
        assert_eq!(shown.text, "ff0013");
        assert!(hex(&[7; 300]).ends_with("(300 bytes)"));
        assert_eq!(show(&[]).read_as, "hex");
    }

    proptest! {
        /// Any bytes at all are shown, never a panic.
        #[test]
        fn any_bytes_are_shown(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let shown = show(&bytes);
            prop_assert!(!shown.read_as.is_empty());
        }
    }
}
