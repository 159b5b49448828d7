//! Reading a filter's parts from text, as the command line's flags and the
//! console's query string give them: one reading, one set of error messages.

use cano_core::checkpoint::LiveStatus;

use crate::error::InspectError;
use crate::when::parse_time;

/// The statuses named in `texts`, each one status or several separated by commas
/// (empty parts are skipped).
pub fn statuses<'a>(
    texts: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<LiveStatus>, InspectError> {
    texts
        .into_iter()
        .flat_map(|text| text.split(','))
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            part.parse::<LiveStatus>()
                .map_err(|e| InspectError::BadInput(e.to_string()))
        })
        .collect()
}

/// A start-time bound in microseconds since the Unix epoch, from `text` (a UTC date,
/// date and time, or milliseconds); `name` is how the caller called it (`--since`).
pub fn start_time(text: Option<&str>, name: &str) -> Result<Option<u64>, InspectError> {
    text.map(|t| {
        parse_time(t).map(|ms| ms.saturating_mul(1000)).ok_or_else(|| {
            InspectError::BadInput(format!(
                "{name} {t:?} is not a time: write YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (UTC) or milliseconds"
            ))
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_times_read_as_both_callers_give_them() {
        assert_eq!(
            statuses(["failed,parked", "", "finished"]).unwrap(),
            [LiveStatus::Failed, LiveStatus::Parked, LiveStatus::Finished]
        );
        assert!(
            statuses(["done"])
                .unwrap_err()
                .to_string()
                .contains("\"done\"")
        );
        assert_eq!(
            start_time(Some("1970-01-02"), "since").unwrap(),
            Some(86_400_000_000)
        );
        assert_eq!(start_time(None, "since").unwrap(), None);
        let err = start_time(Some("yesterday"), "--since")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--since") && err.contains("not a time"),
            "{err}"
        );
    }
}
