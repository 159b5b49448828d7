use std::time::Duration;

use super::*;

#[derive(Debug, thiserror::Error)]
#[error("disk full")]
struct DiskFull;

#[test]
fn user_errors_keep_their_type_through_wrapping() {
    let inner = CanoError::task(DiskFull).at(&"Save", "SaveTask");
    let outer = CanoError::retry_exhausted("gave up after 3 attempts").with_source(inner);
    assert!(outer.downcast_ref::<DiskFull>().is_some());
    assert!(outer.downcast_ref::<std::io::Error>().is_none());
    // A clone keeps the cause too.
    assert!(outer.clone().downcast_ref::<DiskFull>().is_some());
}

#[test]
fn display_names_the_kind_task_state_and_fix() {
    let err = CanoError::workflow("no handler registered")
        .at(&"Ship", "ShipTask")
        .with_hint("register a task for it");
    assert_eq!(
        err.to_string(),
        "Workflow error: task `ShipTask` in state \"Ship\": no handler registered (fix: register a task for it)"
    );
}

#[test]
fn the_innermost_place_wins() {
    let err = CanoError::store("missing").at(&1, "Inner").at(&2, "Outer");
    assert_eq!(err.state(), Some("1"));
    assert_eq!(err.task_name(), Some("Inner"));
}

#[test]
fn classification() {
    assert!(CanoError::configuration("x").is_permanent());
    assert!(CanoError::resource_not_found("x").is_permanent());
    assert!(!CanoError::task_execution("x").is_permanent());
    assert!(!CanoError::generic("x").is_permanent());
    assert!(CanoError::task_execution("x").permanent().is_permanent());
}

#[test]
fn wrapped_error_text_is_the_message() {
    assert_eq!(
        CanoError::task(DiskFull).to_string(),
        "Task execution error: disk full"
    );
    // Every variant is one boxed pointer: two words, whatever the variant.
    assert_eq!(
        std::mem::size_of::<CanoError>(),
        2 * std::mem::size_of::<usize>()
    );
}

#[test]
fn rate_limited_keeps_its_delay_and_source() {
    let err = CanoError::rate_limited(Duration::from_millis(250), "bucket empty")
        .with_source(DiskFull)
        .at(&"Fetch", "FetchTask");
    assert!(
        matches!(&err, CanoError::RateLimited { retry_after, .. } if *retry_after == Duration::from_millis(250))
    );
    assert_eq!(err.retry_after(), Some(Duration::from_millis(250)));
    assert!(err.downcast_ref::<DiskFull>().is_some());
    assert_eq!(
        err.to_string(),
        "Rate limited: task `FetchTask` in state \"Fetch\": bucket empty"
    );
    assert!(!err.is_permanent());
}

#[test]
fn a_failed_rollback_keeps_the_original_and_every_compensation_error() {
    let original = CanoError::task(DiskFull).at(&"Ship", "ShipTask");
    let errors = vec![
        original,
        CanoError::timeout("hung").at(&"Charge", "Charge"),
        CanoError::task_execution("refused").at(&"Reserve", "Reserve"),
    ];
    let err = CanoError::compensation_failed(errors);
    assert!(err.is_permanent());
    assert_eq!(err.category(), "compensation_failed");
    // The user's error of the original failure is still found.
    assert!(err.downcast_ref::<DiskFull>().is_some());
    let CanoError::CompensationFailed { errors } = &err else {
        panic!("wrong variant: {err:?}");
    };
    assert_eq!(errors.len(), 3);
    assert_eq!(errors[0].task_name(), Some("ShipTask"));
    let states: Vec<_> = errors.compensations().iter().map(|e| e.state()).collect();
    assert_eq!(states, [Some("\"Charge\""), Some("\"Reserve\"")]);
    let text = err.to_string();
    assert!(
        text.starts_with(
            "Compensation failed (3 error(s)); original: Task execution error: task `ShipTask`"
        ),
        "{text}"
    );
    assert!(
        text.contains("; compensation #1: Timeout error: task `Charge`"),
        "{text}"
    );
    assert!(
        text.contains("; compensation #2: Task execution error: task `Reserve`"),
        "{text}"
    );
    assert_eq!(
        std::mem::size_of::<CanoError>(),
        2 * std::mem::size_of::<usize>()
    );
    // Failing again while rolling back adds to the same list.
    let later = CanoError::task_execution("release refused").at(&"Reserve", "Reserve");
    let merged = CanoError::compensation_failed(vec![err, later]);
    let CanoError::CompensationFailed { errors } = &merged else {
        panic!("wrong variant");
    };
    assert_eq!(
        errors.original().and_then(CanoError::task_name),
        Some("ShipTask")
    );
    assert_eq!(errors.compensations().len(), 3);
    // An empty list is still an error that reads sensibly.
    let empty = CanoError::compensation_failed(vec![]);
    assert_eq!(empty.message(), "compensation failed");
    assert!(empty.clone().with_hint("x").permanent().is_permanent());
}

#[test]
fn the_013_forms_build_match_compare_and_print() {
    let err = CanoError::TaskExecution("Test error".into());
    assert_eq!(format!("{err}"), "Task execution error: Test error");
    assert_eq!(err.message(), "Test error");
    assert_eq!(err.category(), "task_execution");
    let owned = CanoError::Store(String::from("key missing").into());
    match &owned {
        CanoError::Store(msg) => {
            assert!(msg.contains("missing"));
            assert_eq!(msg, "key missing");
            assert_eq!(msg.to_string(), "key missing");
        }
        other => panic!("{other:?}"),
    }
    // By variant and message, as 0.13 compared.
    assert_eq!(
        CanoError::TaskExecution("a".into()),
        CanoError::task_execution("a").at(&"S", "t")
    );
    assert_ne!(
        CanoError::task_execution("a"),
        CanoError::task_execution("b")
    );
    assert_ne!(CanoError::timeout("k"), CanoError::workflow("k"));
    let from_str: CanoError = "Test error".into();
    let from_string: CanoError = String::from("Test error").into();
    assert!(matches!(&from_str, CanoError::Generic(m) if m == "Test error"));
    assert_eq!(from_str, from_string);
    assert_eq!(format!("{from_str}"), "Error: Test error");
    let io: CanoError = std::io::Error::new(std::io::ErrorKind::NotFound, "file missing").into();
    assert_eq!(io.category(), "generic");
    assert!(io.message().contains("IO error") && io.message().contains("file missing"));
    assert!(io.downcast_ref::<std::io::Error>().is_some());
    let boxed: BoxError = Box::new(DiskFull);
    let boxed: CanoError = boxed.into();
    assert_eq!(boxed.message(), "disk full");
    for (err, text) in [
        (
            CanoError::resource_not_found("missing key"),
            "Resource not found: missing key",
        ),
        (
            CanoError::resource_type_mismatch("wrong type"),
            "Resource type mismatch: wrong type",
        ),
        (
            CanoError::resource_duplicate_key("dup"),
            "Resource duplicate key: dup",
        ),
        (
            CanoError::checkpoint_store("disk full"),
            "Checkpoint store error: disk full",
        ),
        (
            CanoError::circuit_open("breaker tripped"),
            "Circuit open: breaker tripped",
        ),
        (
            CanoError::timeout("attempt deadline reached"),
            "Timeout error: attempt deadline reached",
        ),
        (
            CanoError::retry_exhausted("gave up"),
            "Retry exhausted: gave up",
        ),
        (CanoError::configuration("bad"), "Configuration error: bad"),
    ] {
        assert_eq!(err.to_string(), text);
    }
    let failed = CanoError::compensation_failed(vec![
        CanoError::task_execution("charge declined"),
        CanoError::generic("refund timed out"),
    ]);
    assert_eq!(failed.message(), "charge declined");
    let shown = failed.to_string();
    assert!(
        shown.contains("Compensation failed (2 error(s))"),
        "{shown}"
    );
    assert!(
        shown.contains("original: Task execution error: charge declined"),
        "{shown}"
    );
    assert!(
        shown.contains("compensation #1: Error: refund timed out"),
        "{shown}"
    );
    if let CanoError::CompensationFailed { errors } = &failed {
        assert_eq!(errors[1].message(), "refund timed out");
        assert_eq!(
            *errors,
            vec![
                CanoError::task_execution("charge declined"),
                CanoError::generic("refund timed out"),
            ]
        );
    }
    assert_ne!(
        CanoError::compensation_failed(vec![CanoError::generic("x")]),
        CanoError::generic("x")
    );
}
