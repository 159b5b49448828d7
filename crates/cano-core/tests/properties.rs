//! Properties of the state machine over random transition tables: the engine visits
//! exactly the states its tasks choose, in order, stops at the first exit state, and
//! reports an unregistered state as an error (never a panic), and refuses a workflow
//! with no handler at all before running anything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cano_core::{CanoError, Task, TaskConfig, TaskResult, Workflow};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct St(u8);

/// Past this many steps every task moves to `STOP`, so every run ends.
const CAP: usize = 64;
const STOP: St = St(255);

/// Chooses its next state from a script, by how often this state was visited.
struct Scripted {
    me: u8,
    script: Vec<u8>,
    visits: AtomicUsize,
    steps: Arc<AtomicUsize>,
    path: Arc<Mutex<Vec<u8>>>,
}

#[async_trait]
impl Task<St> for Scripted {
    async fn run_bare(&self) -> Result<TaskResult<St>, CanoError> {
        self.path.lock().unwrap().push(self.me);
        let step = self.steps.fetch_add(1, Ordering::SeqCst);
        let visit = self.visits.fetch_add(1, Ordering::SeqCst);
        let next = if step >= CAP {
            STOP
        } else {
            St(self.script[visit % self.script.len()])
        };
        Ok(TaskResult::Single(next))
    }
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }
}

#[derive(Debug, Clone)]
struct Table {
    /// Per state id: `None` = unregistered, `Some(script)` = registered.
    scripts: Vec<Option<Vec<u8>>>,
    exits: Vec<bool>,
    initial: u8,
}

fn table() -> impl Strategy<Value = Table> {
    // Up to 39 states: past the room a new workflow starts with, so the table grows.
    (2usize..40).prop_flat_map(|n| {
        let script = proptest::collection::vec(0..n as u8, 1..4);
        (
            proptest::collection::vec(proptest::option::weighted(0.85, script), n),
            proptest::collection::vec(proptest::bool::weighted(0.2), n),
            0..n as u8,
        )
            .prop_map(|(scripts, exits, initial)| Table {
                scripts,
                exits,
                initial,
            })
    })
}

/// What the engine should do, computed directly from the table.
fn expected(table: &Table) -> (Vec<u8>, Result<St, St>) {
    let mut visits = vec![0usize; table.scripts.len()];
    let mut path = Vec::new();
    let mut state = table.initial;
    let mut steps = 0;
    loop {
        if state == STOP.0 {
            return (path, Ok(STOP));
        }
        let i = state as usize;
        if table.exits[i] {
            return (path, Ok(St(state)));
        }
        let Some(script) = &table.scripts[i] else {
            return (path, Err(St(state)));
        };
        path.push(state);
        let next = if steps >= CAP {
            STOP.0
        } else {
            script[visits[i] % script.len()]
        };
        visits[i] += 1;
        steps += 1;
        state = next;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_engine_follows_the_tasks_choices(table in table()) {
        let steps = Arc::new(AtomicUsize::new(0));
        let path = Arc::new(Mutex::new(Vec::new()));
        let mut wf = Workflow::bare().add_exit_state(STOP);
        for (i, script) in table.scripts.iter().enumerate() {
            if table.exits[i] {
                wf = wf.add_exit_state(St(i as u8));
            } else if let Some(script) = script {
                wf = wf.register(St(i as u8), Scripted {
                    me: i as u8,
                    script: script.clone(),
                    visits: AtomicUsize::new(0),
                    steps: steps.clone(),
                    path: path.clone(),
                });
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let outcome = rt.block_on(wf.orchestrate(St(table.initial)));
        let any_handler = (0..table.scripts.len()).any(|i| !table.exits[i] && table.scripts[i].is_some());
        if !any_handler {
            // A workflow without a single handler is refused before anything runs.
            prop_assert!(matches!(outcome, Err(CanoError::Configuration(_))), "{:?}", outcome);
            prop_assert!(path.lock().unwrap().is_empty());
            return Ok(());
        }
        let (want_path, want_end) = expected(&table);
        prop_assert_eq!(&*path.lock().unwrap(), &want_path);
        match (outcome, want_end) {
            (Ok(end), Ok(want)) => prop_assert_eq!(end, want),
            (Err(err), Err(missing)) => {
                prop_assert!(matches!(err, CanoError::Workflow(_)), "{:?}", err);
                let shown = format!("{missing:?}");
                prop_assert_eq!(err.state(), Some(shown.as_str()));
            }
            (got, want) => prop_assert!(false, "got {:?}, want {:?}", got, want),
        }
    }
}
