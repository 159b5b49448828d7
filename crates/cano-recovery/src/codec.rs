//! The on-disk form of a checkpoint row: one format-version byte, then the row in
//! bincode. A later format gets the next byte value, and this module keeps reading the
//! old ones, so rows written by an older build always load.

use cano_core::CanoError;
use cano_core::checkpoint::{Bincode, CheckpointRow, Codec};

/// The format this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// The bytes of `row`, behind the format-version byte.
pub fn encode_row(row: &CheckpointRow) -> Result<Vec<u8>, CanoError> {
    let body = Bincode::encode(row)?;
    let mut bytes = Vec::with_capacity(body.len() + 1);
    bytes.push(FORMAT_VERSION);
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// The row in `bytes`. Errors say what is wrong (empty, a format this build does not
/// know, undecodable) but not where: the caller adds the run and row.
pub fn decode_row(bytes: &[u8]) -> Result<CheckpointRow, CanoError> {
    match bytes.split_first() {
        None => Err(CanoError::store("the row is empty").permanent()),
        Some((&FORMAT_VERSION, body)) => Bincode::decode(body).map_err(|e| {
            CanoError::store(format!("the row is corrupt: {}", e.message()))
                .with_source(e)
                .permanent()
        }),
        Some((&version, _)) if version > FORMAT_VERSION => Err(CanoError::store(format!(
            "the row is in format {version}, newer than this build reads (up to {FORMAT_VERSION})"
        ))
        .with_hint("resume the run with the newer build that wrote it")
        .permanent()),
        Some((&version, _)) => Err(CanoError::store(format!(
            "the row starts with format byte {version}, which no build writes: it is corrupt"
        ))
        .permanent()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cano_core::RunId;
    use cano_core::checkpoint::{DataChange, RowKind};

    fn row() -> CheckpointRow {
        CheckpointRow {
            run: RunId::from(42),
            seq: 3,
            kind: RowKind::Step,
            workflow: "import".into(),
            version: 2,
            state: vec![1, 2],
            label: "Fetch".into(),
            data: DataChange {
                full: false,
                entries: vec![("k".into(), Some(vec![9])), ("gone".into(), None)],
            },
            cursor: Some(vec![7]),
            message: String::new(),
            written_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trips_behind_the_version_byte() {
        let bytes = encode_row(&row()).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_row(&bytes).unwrap(), row());
    }

    #[test]
    fn corrupt_future_and_empty_rows_are_errors() {
        let mut bytes = encode_row(&row()).unwrap();
        assert!(decode_row(&[]).unwrap_err().to_string().contains("empty"));
        bytes[0] = FORMAT_VERSION + 1;
        assert!(
            decode_row(&bytes)
                .unwrap_err()
                .to_string()
                .contains("newer")
        );
        bytes[0] = 0;
        assert!(
            decode_row(&bytes)
                .unwrap_err()
                .to_string()
                .contains("corrupt")
        );
        let mut truncated = encode_row(&row()).unwrap();
        truncated.truncate(truncated.len() / 2);
        assert!(
            decode_row(&truncated)
                .unwrap_err()
                .to_string()
                .contains("corrupt")
        );
    }
}
