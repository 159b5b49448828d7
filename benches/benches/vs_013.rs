//! Our engine beside the published cano 0.13, in the same process and the same rounds
//! (see [`paired`]): build a 10-state workflow and run it once, build only, run only.
//! The same workflow is written once for each crate, through its own prelude, the way
//! a user of each would write it.
//!
//! Needs the `vs-013` feature (it downloads cano 0.13 from crates.io); `cargo xtask
//! bench` runs it and prints the ratios as `vs_013.json`.

use cano_benches::{paired, write_report};

/// The same linear workflow for one crate: ten trivial tasks, each naming the next
/// state, then an exit state.
macro_rules! linear_in {
    ($krate:ident) => {
        use $krate::prelude::*;

        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct Step(pub u8);

        pub struct Next(pub u8);

        #[async_trait::async_trait]
        impl Task<Step> for Next {
            async fn run_bare(&self) -> Result<TaskResult<Step>, CanoError> {
                Ok(TaskResult::Single(Step(self.0)))
            }
        }

        pub fn workflow() -> Workflow<Step> {
            (0..10u8)
                .fold(Workflow::bare(), |wf, i| wf.register(Step(i), Next(i + 1)))
                .add_exit_state(Step(10))
        }

        pub async fn run(workflow: &Workflow<Step>) {
            let end = workflow.orchestrate(Step(0)).await.unwrap();
            assert_eq!(end, Step(10));
        }
    };
}

mod ours {
    linear_in!(cano);
}

mod published {
    linear_in!(cano013);
}

fn main() {
    let rt = cano_benches::current_thread();
    let build_and_run = paired(
        || rt.block_on(ours::run(&ours::workflow())),
        || rt.block_on(published::run(&published::workflow())),
    );
    let build = paired(
        || drop(std::hint::black_box(ours::workflow())),
        || drop(std::hint::black_box(published::workflow())),
    );
    let (built, built_013) = (ours::workflow(), published::workflow());
    let run = paired(
        || rt.block_on(ours::run(&built)),
        || rt.block_on(published::run(&built_013)),
    );
    let entry = |p: &cano_benches::Paired| {
        format!(
            "{{\"ours_ns\":{:.1},\"cano_0_13_ns\":{:.1},\"ratio\":{:.3}}}",
            p.a_ns, p.b_ns, p.ratio
        )
    };
    write_report(
        "vs_013.json",
        &format!(
            "{{\"build_and_run\":{},\"build\":{},\"run\":{}}}\n",
            entry(&build_and_run),
            entry(&build),
            entry(&run)
        ),
    );
}
