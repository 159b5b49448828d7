//! How a state is written into a checkpoint row so that an edited state enum can never
//! resume a run in the wrong variant.
//!
//! A compact codec such as bincode stores an enum variant by its index: insert a
//! variant before `Send`, and the bytes of a run stopped in `Send` decode as the new
//! variant. So every stored state carries a tag ahead of the codec's bytes: the name of
//! its variant and a fingerprint of its shape (variant and field names, the kinds of
//! its values, never the values themselves). Reading a state back decodes it, takes the
//! tag of what was decoded, and refuses the bytes unless both match, with an error
//! naming the stored and the current reading.
//!
//! Layout: `0xCA 0x01`, the variant name's length (u16, little-endian) and its UTF-8
//! bytes, the shape fingerprint (u64, little-endian), then the codec's bytes. Bytes
//! without the tag (written before it existed) are decoded as they are, unchecked.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::ser::{self, Serialize};

use super::codec::Codec;
use crate::error::CanoError;

const MAGIC: [u8; 2] = [0xCA, 0x01];

/// What a stored state says about itself: its variant and the fingerprint of its shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateTag {
    /// The name of the enum variant the state is (empty for a state that is not an
    /// enum, such as a struct or a number).
    pub variant: String,
    /// A fingerprint of the state's shape: variant and field names and the kinds of
    /// their values, so a renamed, reordered or retyped field changes it.
    pub shape: u64,
}

impl StateTag {
    /// The tag of `state`.
    pub fn of<S: Serialize + ?Sized>(state: &S) -> Result<Self, CanoError> {
        let (variant, shape) = shape_of(state)?;
        Ok(Self {
            variant: variant.to_owned(),
            shape,
        })
    }

    /// The tag at the front of stored state bytes, and the codec's bytes after it;
    /// `None` for bytes written without a tag.
    pub fn read(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let rest = bytes.strip_prefix(&MAGIC)?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let (name, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
        let variant = std::str::from_utf8(name).ok()?.to_owned();
        let (shape, body) = rest.split_first_chunk::<8>()?;
        Some((
            Self {
                variant,
                shape: u64::from_le_bytes(*shape),
            },
            body,
        ))
    }
}

/// The variant name and shape fingerprint of `state`, without allocating.
fn shape_of<S: Serialize + ?Sized>(state: &S) -> Result<(&'static str, u64), CanoError> {
    let mut shape = Shape::default();
    state.serialize(&mut shape).map_err(|e| {
        CanoError::store(format!(
            "could not read the shape of a `{}`: {e}",
            std::any::type_name::<S>()
        ))
        .with_hint("make the state's Serialize implementation succeed for every value")
        .permanent()
    })?;
    Ok((shape.variant.unwrap_or_default(), shape.hash.0))
}

/// Writes the tag of a state with `variant` and `shape` at the end of `into`.
fn write_tag(variant: &str, shape: u64, into: &mut Vec<u8>) {
    // Variant names are Rust identifiers: far below the u16 limit.
    let name = &variant.as_bytes()[..variant.len().min(usize::from(u16::MAX))];
    into.extend_from_slice(&MAGIC);
    into.extend_from_slice(&(name.len() as u16).to_le_bytes());
    into.extend_from_slice(name);
    into.extend_from_slice(&shape.to_le_bytes());
}

impl fmt::Display for StateTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.variant.is_empty() {
            write!(f, "(not an enum variant, shape {:016x})", self.shape)
        } else {
            write!(f, "`{}`", self.variant)
        }
    }
}

/// `state` as stored in a checkpoint row: its tag, then its bytes in codec `C`.
pub fn encode_state<C: Codec, S: Serialize + ?Sized>(state: &S) -> Result<Vec<u8>, CanoError> {
    let (variant, shape) = shape_of(state)?;
    let mut bytes = Vec::with_capacity(variant.len() + 20);
    write_tag(variant, shape, &mut bytes);
    C::encode_into(state, &mut bytes)?;
    Ok(bytes)
}

/// The state stored in `bytes` (see [`encode_state`]). Tagged bytes decode only to a
/// value with the same variant and shape: anything else is a
/// [`CanoError::WorkflowVersionMismatch`] naming the stored variant and what this
/// build's type reads, never a value of another variant.
pub fn decode_state<C: Codec, S: Serialize + DeserializeOwned>(
    bytes: &[u8],
) -> Result<S, CanoError> {
    let Some((stored, body)) = StateTag::read(bytes) else {
        return C::decode(bytes);
    };
    let changed = |now: String| {
        CanoError::workflow_version_mismatch(format!(
            "the stored state is variant {stored}, but this build's `{}` {now}: the state type changed since the row was written",
            crate::util::short_type_name::<S>()
        ))
        .with_hint("resume the run with the build that wrote it, or give changed workflows a new Workflow::with_workflow_version so old runs are refused by version")
    };
    let state: S = C::decode(body)
        .map_err(|e| changed(format!("cannot read its bytes ({})", e.message())).with_source(e))?;
    let current = StateTag::of(&state)?;
    if current.variant != stored.variant {
        return Err(changed(format!("reads them as variant {current}")));
    }
    if current.shape != stored.shape {
        return Err(changed(format!(
            "reads them as {current} with other fields or field types"
        )));
    }
    Ok(state)
}

/// FNV-1a, 64 bits: stable across builds and platforms, as stored fingerprints must be.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in &(bytes.len() as u64).to_le_bytes() {
            self.byte(b);
        }
        for &b in bytes {
            self.byte(b);
        }
    }

    fn word(&mut self, w: u64) {
        for b in w.to_le_bytes() {
            self.byte(b);
        }
    }
}

/// A serde serializer that fingerprints a value's shape instead of writing it.
#[derive(Default)]
struct Shape {
    hash: Fnv,
    depth: u32,
    /// The first variant met on the way down from the top through newtype structs.
    variant: Option<&'static str>,
    /// Whether everything above the current value is a newtype struct.
    at_top: bool,
    /// For maps: the entries' fingerprints, summed so their order does not matter.
    entries: Vec<(u64, Fnv)>,
}

/// The error of a `Serialize` implementation that gave up.
#[derive(Debug)]
struct ShapeError(String);

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ShapeError {}

impl ser::Error for ShapeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

impl Shape {
    fn kind(&mut self, kind: u8) -> Result<(), ShapeError> {
        self.hash.byte(kind);
        Ok(())
    }

    fn variant(&mut self, kind: u8, name: &'static str) {
        if self.variant.is_none() && (self.depth == 0 || self.at_top) {
            self.variant = Some(name);
        }
        self.hash.byte(kind);
        self.hash.bytes(name.as_bytes());
    }

    fn open(&mut self, kind: u8) {
        self.hash.byte(kind);
        self.depth += 1;
        self.at_top = false;
    }

    fn close(&mut self, kind: u8) {
        self.depth -= 1;
        self.hash.byte(kind);
    }
}

type Res = Result<(), ShapeError>;

impl ser::Serializer for &mut Shape {
    type Ok = ();
    type Error = ShapeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    // Kinds, not sizes: a widened integer reads the same in a varint codec.
    fn serialize_bool(self, _: bool) -> Res {
        self.kind(b'b')
    }
    fn serialize_i8(self, _: i8) -> Res {
        self.kind(b'i')
    }
    fn serialize_i16(self, _: i16) -> Res {
        self.kind(b'i')
    }
    fn serialize_i32(self, _: i32) -> Res {
        self.kind(b'i')
    }
    fn serialize_i64(self, _: i64) -> Res {
        self.kind(b'i')
    }
    fn serialize_i128(self, _: i128) -> Res {
        self.kind(b'i')
    }
    fn serialize_u8(self, _: u8) -> Res {
        self.kind(b'u')
    }
    fn serialize_u16(self, _: u16) -> Res {
        self.kind(b'u')
    }
    fn serialize_u32(self, _: u32) -> Res {
        self.kind(b'u')
    }
    fn serialize_u64(self, _: u64) -> Res {
        self.kind(b'u')
    }
    fn serialize_u128(self, _: u128) -> Res {
        self.kind(b'u')
    }
    fn serialize_f32(self, _: f32) -> Res {
        self.kind(b'f')
    }
    fn serialize_f64(self, _: f64) -> Res {
        self.kind(b'F')
    }
    fn serialize_char(self, _: char) -> Res {
        self.kind(b'c')
    }
    fn serialize_str(self, _: &str) -> Res {
        self.kind(b's')
    }
    fn serialize_bytes(self, _: &[u8]) -> Res {
        self.kind(b'y')
    }
    fn serialize_none(self) -> Res {
        self.kind(b'N')
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Res {
        self.open(b'S');
        value.serialize(&mut *self)?;
        self.close(b's');
        Ok(())
    }
    fn serialize_unit(self) -> Res {
        self.kind(b'0')
    }
    fn serialize_unit_struct(self, _: &'static str) -> Res {
        self.kind(b'U')
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Res {
        self.variant(b'V', variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Res {
        // A wrapper adds nothing to the shape; its inner enum's variant is the state's.
        let top = self.depth == 0 || self.at_top;
        self.hash.byte(b'n');
        self.depth += 1;
        self.at_top = top;
        value.serialize(&mut *self)?;
        self.depth -= 1;
        Ok(())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Res {
        self.variant(b'W', variant);
        self.open(b'(');
        value.serialize(&mut *self)?;
        self.close(b')');
        Ok(())
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, ShapeError> {
        self.open(b'[');
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, ShapeError> {
        self.open(b'(');
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, ShapeError> {
        self.open(b'(');
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, ShapeError> {
        self.variant(b'T', variant);
        self.open(b'(');
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, ShapeError> {
        self.open(b'{');
        self.entries.push((0, self.hash));
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, ShapeError> {
        self.open(b'<');
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self, ShapeError> {
        self.variant(b'R', variant);
        self.open(b'<');
        Ok(self)
    }
    fn is_human_readable(&self) -> bool {
        // As bincode answers, so types serialize here as they do in the row.
        false
    }
}

macro_rules! elements {
    ($($trait:ident :: $method:ident, $end:literal);* $(;)?) => {$(
        impl ser::$trait for &mut Shape {
            type Ok = ();
            type Error = ShapeError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Res {
                self.hash.byte(b',');
                value.serialize(&mut **self)
            }
            fn end(self) -> Res {
                self.close($end);
                Ok(())
            }
        }
    )*};
}

elements! {
    SerializeSeq::serialize_element, b']';
    SerializeTuple::serialize_element, b')';
    SerializeTupleStruct::serialize_field, b')';
    SerializeTupleVariant::serialize_field, b')';
}

macro_rules! fields {
    ($($trait:ident),*) => {$(
        impl ser::$trait for &mut Shape {
            type Ok = ();
            type Error = ShapeError;
            fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Res {
                self.hash.bytes(key.as_bytes());
                value.serialize(&mut **self)
            }
            fn skip_field(&mut self, key: &'static str) -> Res {
                self.hash.byte(b'-');
                self.hash.bytes(key.as_bytes());
                Ok(())
            }
            fn end(self) -> Res {
                self.close(b'>');
                Ok(())
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for &mut Shape {
    type Ok = ();
    type Error = ShapeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Res {
        // Each entry is fingerprinted on its own and the entries summed, so the
        // map's iteration order does not matter.
        self.hash = Fnv::default();
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Res {
        self.hash.byte(b':');
        value.serialize(&mut **self)?;
        if let Some(entry) = self.entries.last_mut() {
            entry.0 = entry.0.wrapping_add(self.hash.0);
        }
        Ok(())
    }
    fn end(self) -> Res {
        let (sum, outer) = self.entries.pop().unwrap_or((0, Fnv::default()));
        self.hash = outer;
        self.hash.word(sum);
        self.close(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::checkpoint::Bincode;

    mod before {
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum Order {
            Charge,
            Send { parcel: u32, carrier: String },
            Done,
        }
    }

    mod after {
        // `Refund` inserted before `Send`: bincode's index 1 now means `Refund`.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum Order {
            Charge,
            Refund { parcel: u32, carrier: String },
            Send { parcel: u32, carrier: String },
            Done,
        }
    }

    mod swapped {
        // The same variant with its fields swapped: bincode would read garbage.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum Order {
            Charge,
            Send { carrier: String, parcel: u32 },
            Done,
        }
    }

    #[test]
    fn an_inserted_variant_is_refused_not_resumed() {
        let bytes = encode_state::<Bincode, _>(&before::Order::Send {
            parcel: 7,
            carrier: "post".into(),
        })
        .unwrap();
        // Untagged, the same bytes are happily read as the wrong variant.
        let body = StateTag::read(&bytes).unwrap().1;
        assert!(matches!(
            Bincode::decode::<after::Order>(body).unwrap(),
            after::Order::Refund { .. }
        ));
        let err = decode_state::<Bincode, after::Order>(&bytes).unwrap_err();
        assert!(
            matches!(err, CanoError::WorkflowVersionMismatch(_)),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("`Send`") && text.contains("`Refund`"),
            "{text}"
        );
    }

    #[test]
    fn swapped_fields_of_one_type_are_refused() {
        #[derive(Debug, Serialize, Deserialize)]
        enum A {
            Move { x: u32, y: u32 },
        }
        #[derive(Debug, Serialize, Deserialize)]
        enum B {
            Move { y: u32, x: u32 },
        }
        let bytes = encode_state::<Bincode, _>(&A::Move { x: 1, y: 2 }).unwrap();
        let err = decode_state::<Bincode, B>(&bytes).unwrap_err();
        assert!(err.to_string().contains("other fields"), "{err}");
        let bytes = encode_state::<Bincode, _>(&before::Order::Send {
            parcel: 1,
            carrier: "x".into(),
        })
        .unwrap();
        assert!(decode_state::<Bincode, swapped::Order>(&bytes).is_err());
    }

    #[test]
    fn the_same_type_round_trips_and_widened_integers_still_read() {
        for state in [
            before::Order::Charge,
            before::Order::Send {
                parcel: u32::MAX,
                carrier: String::new(),
            },
            before::Order::Done,
        ] {
            let bytes = encode_state::<Bincode, _>(&state).unwrap();
            assert_eq!(
                decode_state::<Bincode, before::Order>(&bytes).unwrap(),
                state
            );
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum Narrow {
            Page(u16),
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum Wide {
            Page(u64),
        }
        let bytes = encode_state::<Bincode, _>(&Narrow::Page(9)).unwrap();
        assert_eq!(
            decode_state::<Bincode, Wide>(&bytes).unwrap(),
            Wide::Page(9)
        );
    }

    #[test]
    fn a_removed_variant_and_untagged_bytes() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum Short {
            Charge,
        }
        let bytes = encode_state::<Bincode, _>(&before::Order::Done).unwrap();
        let err = decode_state::<Bincode, Short>(&bytes).unwrap_err();
        assert!(matches!(err, CanoError::WorkflowVersionMismatch(_)));
        assert!(err.to_string().contains("`Done`"), "{err}");
        // Bytes written before tags existed are read as they are.
        let legacy = Bincode::encode(&before::Order::Charge).unwrap();
        assert_eq!(
            decode_state::<Bincode, before::Order>(&legacy).unwrap(),
            before::Order::Charge
        );
    }

    #[test]
    fn tags_name_variants_through_wrappers_and_ignore_map_order() {
        #[derive(Serialize)]
        struct Wrapped(before::Order);
        let tag = StateTag::of(&Wrapped(before::Order::Done)).unwrap();
        assert_eq!(tag.variant, "Done");
        assert_eq!(StateTag::of(&7u32).unwrap().variant, "");
        #[derive(Serialize)]
        enum Keyed {
            Map(BTreeMap<u8, before::Order>),
        }
        let one: BTreeMap<u8, before::Order> =
            [(1, before::Order::Charge), (2, before::Order::Done)].into();
        let two: BTreeMap<u8, before::Order> =
            [(1, before::Order::Done), (2, before::Order::Charge)].into();
        // Same entries' shapes in another order: the same fingerprint.
        assert_eq!(
            StateTag::of(&Keyed::Map(one)).unwrap(),
            StateTag::of(&Keyed::Map(two)).unwrap()
        );
        assert_eq!(StateTag::read(&[0xCA, 0x01, 9]), None);
        assert_eq!(StateTag::read(&[]), None);
    }
}
