//! `CanoError`: 0.13's variants built from text and matched as text.

use cano::prelude::*;

fn lookup(id: u32) -> CanoResult<String> {
    if id == 0 {
        return Err(CanoError::Configuration("id 0 is reserved".into()));
    }
    Err("upstream said no".into())
}

#[test]
fn variants_are_built_and_matched_as_0_13_did() {
    let err = CanoError::TaskExecution("charge declined".into());
    match &err {
        CanoError::TaskExecution(msg) => assert!(msg.contains("declined")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.to_string(), "Task execution error: charge declined");
    assert_eq!(err.category(), "task_execution");
    assert_eq!(err.message(), "charge declined");
    assert_eq!(err, CanoError::task_execution("charge declined"));
    assert_ne!(err, CanoError::workflow("charge declined"));

    assert!(matches!(lookup(0), Err(CanoError::Configuration(m)) if m == "id 0 is reserved"));
    assert!(matches!(lookup(1), Err(CanoError::Generic(m)) if m.contains("said no")));
    let io: CanoError = std::io::Error::other("disk gone").into();
    assert!(io.message().starts_with("IO error"));

    for err in [
        CanoError::Store("s".into()),
        CanoError::Workflow("w".into()),
        CanoError::RetryExhausted("r".into()),
        CanoError::Timeout("t".into()),
        CanoError::CircuitOpen("c".into()),
        CanoError::CheckpointStore("k".into()),
        CanoError::ResourceNotFound("n".into()),
        CanoError::ResourceTypeMismatch("m".into()),
        CanoError::ResourceDuplicateKey("d".into()),
    ] {
        let copy = err.clone();
        assert_eq!(err, copy);
        assert!(!err.category().is_empty());
    }
}

#[test]
fn a_failed_rollback_lists_the_original_then_each_compensation_error() {
    let err = CanoError::compensation_failed(vec![
        CanoError::task_execution("ship failed"),
        CanoError::generic("refund timed out"),
    ]);
    let CanoError::CompensationFailed { errors } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].message(), "ship failed");
    assert_eq!(err.message(), "ship failed");
    assert!(err.to_string().contains("refund timed out"));
}
