//! `Workflow::with_tracing_span` (feature `tracing`): a run's spans and its tasks'
//! events are recorded inside the span the program gives, as in cano 0.13.

use std::io::Write;
use std::sync::{Arc, Mutex};

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Job {
    Work,
    Done,
}

struct Work;

#[task(state = Job)]
impl Work {
    async fn run_bare(&self) -> Result<TaskResult<Job>, CanoError> {
        tracing::info!("working on it");
        Ok(TaskResult::Single(Job::Done))
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_run_is_traced_inside_the_given_span() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let capture = capture.clone();
            move || capture.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let workflow = Workflow::bare()
            .register(Job::Work, Work)
            .add_exit_state(Job::Done)
            .with_tracing_span(tracing::info_span!("nightly_report", tenant = "acme"));
        assert_eq!(
            runtime.block_on(workflow.orchestrate(Job::Work)).unwrap(),
            Job::Done
        );
    });
    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("working on it"))
        .unwrap_or_else(|| panic!("the task's event is recorded: {text}"));
    // The event's span path starts at the program's span, then the run's.
    let outer = line.find("nightly_report{tenant=\"acme\"}").expect(line);
    let run = line.find("cano.run{").expect(line);
    assert!(outer < run, "{line}");
}
