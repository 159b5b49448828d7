//! How values become bytes in checkpoints: the [`Codec`] trait and its default,
//! [`Bincode`]. States, durable run data and stepped cursors all go through it, so a
//! different encoding is one implementation away.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CanoError;

/// Encodes and decodes serde values for checkpoints.
///
/// A codec is a type, not a value: the engine calls it through monomorphised functions,
/// so no codec object is carried around.
pub trait Codec: Send + Sync + 'static {
    /// The codec's name, for error messages.
    const NAME: &'static str;

    /// The bytes of `value`.
    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanoError>;

    /// The bytes of `value`, appended to `into` (by default through
    /// [`encode`](Self::encode); a codec that can write in place saves a copy).
    fn encode_into<T: Serialize + ?Sized>(value: &T, into: &mut Vec<u8>) -> Result<(), CanoError> {
        into.extend_from_slice(&Self::encode(value)?);
        Ok(())
    }

    /// The value encoded in `bytes`; an error if they do not hold a `T`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CanoError>;
}

/// The default codec: bincode 2 through serde, with variable-length integers. Compact
/// and fast; not self-describing, so the reading type must match the writing one (a
/// mismatch is a decode error, never a wrong value of the right size).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

/// The most bytes one decode may claim (see [`Bincode::decode`]).
const DECODE_LIMIT: usize = 1 << 30;

impl Codec for Bincode {
    const NAME: &'static str = "bincode";

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CanoError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(encode_error::<T>)
    }

    fn encode_into<T: Serialize + ?Sized>(value: &T, into: &mut Vec<u8>) -> Result<(), CanoError> {
        bincode::serde::encode_into_std_write(value, into, bincode::config::standard())
            .map(drop)
            .map_err(encode_error::<T>)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CanoError> {
        // The limit bounds what a length prefix may claim: without it, a corrupt or
        // hostile prefix (a damaged row, bytes read as the wrong type) asks for an
        // allocation of exabytes, which aborts the process instead of failing the
        // decode. No stored value comes near it (PostgreSQL's bytea stops at 1 GiB).
        let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
        let (value, used) =
            bincode::serde::decode_from_slice::<T, _>(bytes, config).map_err(|e| {
                CanoError::store(format!(
                    "could not decode a `{}` from {} bytes",
                    std::any::type_name::<T>(),
                    bytes.len()
                ))
                .with_source(e)
                .permanent()
            })?;
        if used != bytes.len() {
            return Err(CanoError::store(format!(
                "{} bytes left over after decoding a `{}`: the bytes hold another type",
                bytes.len() - used,
                std::any::type_name::<T>()
            ))
            .permanent());
        }
        Ok(value)
    }
}

fn encode_error<T: ?Sized>(e: bincode::error::EncodeError) -> CanoError {
    CanoError::store(format!(
        "could not encode a `{}` with bincode: {e}",
        std::any::type_name::<T>()
    ))
    .with_source(e)
    .with_hint("check the type's Serialize implementation (maps need string-like keys for some formats; bincode needs known lengths)")
    .permanent()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum State {
        Start,
        Fetch { page: u32, url: String },
        Done(Vec<u8>),
    }

    #[test]
    fn payload_variants_round_trip() {
        for state in [
            State::Start,
            State::Fetch {
                page: 7,
                url: "https://example.com".into(),
            },
            State::Done(vec![1, 2, 3]),
        ] {
            let bytes = Bincode::encode(&state).unwrap();
            assert_eq!(Bincode::decode::<State>(&bytes).unwrap(), state);
        }
    }

    /// A length prefix that claims more than any value holds (a damaged row, bytes of
    /// another type) is a decode error: before the limit, it aborted the process
    /// trying to allocate exabytes.
    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_abort() {
        // 0xfd: a u64 length follows, here about 2.2 * 10^18.
        let mut bytes = vec![0xfd];
        bytes.extend_from_slice(&2_210_027_110_116_426_026u64.to_le_bytes());
        bytes.extend_from_slice(b"abc");
        assert!(Bincode::decode::<String>(&bytes).is_err());
        assert!(Bincode::decode::<Vec<u8>>(&bytes).is_err());
        assert!(Bincode::decode::<Vec<String>>(&bytes).is_err());
        assert!(
            Bincode::decode::<State>(&[2, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
                .is_err()
        );
    }

    #[test]
    fn another_type_is_an_error_not_a_value() {
        let bytes = Bincode::encode(&State::Fetch {
            page: 1,
            url: "x".into(),
        })
        .unwrap();
        assert!(Bincode::decode::<u8>(&bytes).is_err());
        assert!(Bincode::decode::<State>(&[9]).is_err());
        assert!(Bincode::decode::<State>(&[]).is_err());
    }
}
