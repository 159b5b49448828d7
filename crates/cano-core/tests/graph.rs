//! The workflow graph: declared transitions checked before and during runs, findings
//! over the whole graph, and Mermaid and DOT drawings.

use cano_core::router::RouterTask;
use cano_core::{CanoError, Resources, Task, TaskResult, Workflow};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum S {
    Start,
    Check,
    Ship,
    Refund,
    Loop,
    Orphan,
    Done,
}

/// Moves to a fixed state.
struct Go(S);

#[async_trait::async_trait]
impl Task<S> for Go {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(self.0.clone()))
    }
}

struct Decide;

#[async_trait::async_trait]
impl RouterTask<S> for Decide {
    async fn route(&self, _res: &Resources) -> Result<TaskResult<S>, CanoError> {
        Ok(TaskResult::Single(S::Ship))
    }
    fn targets(&self) -> Option<Vec<S>> {
        Some(vec![S::Ship, S::Refund])
    }
}

fn declared() -> Workflow<S> {
    Workflow::bare()
        .register(S::Start, Go(S::Check))
        .transitions(S::Start, [S::Check])
        .register_router(S::Check, Decide)
        .register(S::Ship, Go(S::Done))
        .transitions(S::Ship, [S::Done])
        .register(S::Refund, Go(S::Done))
        .add_exit_state(S::Done)
}

#[tokio::test]
async fn a_declared_graph_passes_and_runs() {
    let workflow = declared();
    workflow.validate_from(&S::Start).unwrap();
    assert_eq!(workflow.orchestrate(S::Start).await.unwrap(), S::Done);
}

#[test]
fn unreachable_states_and_dead_ends_are_found() {
    let workflow = declared()
        // Loop only ever moves to itself; Orphan is never reached.
        .register(S::Loop, Go(S::Loop))
        .transitions(S::Loop, [S::Loop])
        .register(S::Orphan, Go(S::Done))
        .transitions(S::Orphan, [S::Done])
        .transitions(S::Refund, [S::Loop]);
    let err = workflow.validate_from(&S::Start).unwrap_err().to_string();
    assert!(
        err.contains("state Orphan is never reached from Start"),
        "{err}"
    );
    assert!(
        err.contains("state Loop can never reach an exit state (it only moves to [Loop])"),
        "{err}"
    );
    assert!(
        err.contains("state Refund can never reach an exit state"),
        "{err}"
    );
    assert!(!err.contains("state Ship"), "{err}");
}

#[test]
fn a_state_that_declared_nothing_hides_no_finding() {
    // Refund declared nothing, so Orphan might be reached through it.
    let workflow = declared().register(S::Orphan, Go(S::Done));
    workflow.validate_from(&S::Start).unwrap();
}

#[test]
fn undeclared_targets_and_declarations_without_a_task_are_found() {
    let workflow = declared()
        .transitions(S::Refund, [S::Orphan])
        .transitions(S::Loop, [S::Done]);
    let err = workflow.validate().unwrap_err().to_string();
    assert!(
        err.contains("state Refund declares a transition to Orphan, which has no handler"),
        "{err}"
    );
    assert!(
        err.contains("state Loop declares transitions but has no handler"),
        "{err}"
    );
}

/// Counts its runs, then moves to a fixed state.
struct Counted(S, std::sync::Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl Task<S> for Counted {
    async fn run_bare(&self) -> Result<TaskResult<S>, CanoError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(TaskResult::Single(self.0.clone()))
    }
}

#[tokio::test]
async fn a_state_with_transitions_but_no_task_stops_the_run_before_any_task() {
    // The engine does not check a reached state for a handler again: it relies on
    // this refusal, which comes before the first task runs.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workflow = Workflow::bare()
        .register(S::Start, Counted(S::Loop, runs.clone()))
        .transitions(S::Loop, [S::Done])
        .add_exit_state(S::Done);
    let err = workflow.orchestrate(S::Start).await.unwrap_err();
    assert!(matches!(err, CanoError::Configuration(_)), "{err}");
    assert!(
        err.to_string()
            .contains("state Loop declares transitions but has no handler"),
        "{err}"
    );
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_task_that_leaves_its_declared_transitions_fails_the_run() {
    let workflow = Workflow::bare()
        .register(S::Start, Go(S::Refund))
        .transitions(S::Start, [S::Check, S::Ship])
        .register(S::Refund, Go(S::Done))
        .add_exit_states([S::Done, S::Check, S::Ship]);
    let err = workflow.orchestrate(S::Start).await.unwrap_err();
    assert!(matches!(err, CanoError::Workflow(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("task `Go` in state Start") && text.contains("moved to Refund"),
        "{text}"
    );
    assert!(text.contains("[Check, Ship]"), "{text}");
}

#[test]
fn mermaid_draws_the_declared_graph_and_marks_what_is_not_declared() {
    let mermaid = declared().to_mermaid();
    let expected = "\
flowchart TD
    s0{\"Check\"}
    s1([\"Done\"])
    s2[\"Refund\"]
    s3[\"Ship\"]
    s4[\"Start\"]
    s0 --> s3
    s0 --> s2
    s2 -.-> undeclared
    s3 --> s1
    s4 --> s0
    undeclared((\"not declared\"))
";
    assert_eq!(mermaid, expected);
}

#[test]
fn dot_draws_the_same_graph() {
    let dot = declared().to_dot();
    let expected = "\
digraph workflow {
    rankdir=TB;
    s0 [label=\"Check\", shape=diamond];
    s1 [label=\"Done\", shape=doublecircle];
    s2 [label=\"Refund\", shape=box];
    s3 [label=\"Ship\", shape=box];
    s4 [label=\"Start\", shape=box];
    s0 -> s3;
    s0 -> s2;
    s2 -> undeclared [style=dotted];
    s3 -> s1;
    s4 -> s0;
    undeclared [label=\"not declared\", shape=circle, style=dashed];
}
";
    assert_eq!(dot, expected);
}
