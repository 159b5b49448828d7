//! The workflow graph through the facade: a split/join workflow drawn and checked, its
//! wiring errors found, and every drawing well-formed Mermaid.

use cano::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Quote {
    Ask,
    Compare,
    Booked,
    Nowhere,
}

struct Carrier;

#[task]
impl Task<Quote> for Carrier {
    async fn run_bare(&self) -> Result<TaskResult<Quote>, CanoError> {
        Ok(TaskResult::Single(Quote::Compare))
    }
}

struct Cheapest;

#[task]
impl Task<Quote> for Cheapest {
    async fn run_bare(&self) -> Result<TaskResult<Quote>, CanoError> {
        Ok(TaskResult::Single(Quote::Booked))
    }
}

fn quotes(join: Quote) -> Workflow<Quote> {
    Workflow::bare()
        .register_split(
            Quote::Ask,
            vec![Carrier, Carrier],
            JoinConfig::new(JoinStrategy::All, join),
        )
        .register(Quote::Compare, Cheapest)
        .transitions(Quote::Compare, [Quote::Booked])
        .add_exit_state(Quote::Booked)
}

/// Each line is a header, a node (`id` then a shape around a quoted label) or an edge
/// between two ids: the forms `to_mermaid` writes, all valid Mermaid flowchart syntax.
fn well_formed(mermaid: &str) {
    let mut lines = mermaid.lines();
    assert_eq!(lines.next(), Some("flowchart TD"));
    for line in lines {
        let line = line
            .strip_prefix("    ")
            .unwrap_or_else(|| panic!("unindented: {line:?}"));
        let id_end = line
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(line.len());
        let (id, rest) = line.split_at(id_end);
        assert!(!id.is_empty(), "no id: {line:?}");
        let shapes = [
            ("[\"", "\"]"),
            ("([\"", "\"])"),
            ("{\"", "\"}"),
            ("[[\"", "\"]]"),
            ("[/\"", "\"/]"),
            ("((\"", "\"))"),
        ];
        let node = shapes.iter().any(|(open, close)| {
            rest.starts_with(open)
                && rest.ends_with(close)
                && !rest[open.len()..rest.len() - close.len()].contains('"')
        });
        let edge = [" --> ", " -.-> "]
            .iter()
            .any(|arrow| rest.starts_with(arrow))
            || (rest.starts_with(" -- \"") && rest.contains("\" --> "));
        assert!(node || edge, "not a node or an edge: {line:?}");
    }
}

#[test]
fn a_split_is_drawn_with_its_branches_and_join() {
    let workflow = quotes(Quote::Compare);
    workflow.validate_from(&Quote::Ask).unwrap();
    let mermaid = workflow.to_mermaid();
    assert_eq!(
        mermaid,
        "flowchart TD\n    s0[[\"Ask\"]]\n    s1([\"Booked\"])\n    s2[\"Compare\"]\n    s0 -- \"Carrier, Carrier\" --> s2\n    s2 --> s1\n"
    );
    well_formed(&mermaid);
    well_formed(
        &Workflow::<Quote>::bare()
            .register(Quote::Ask, Carrier)
            .add_exit_state(Quote::Compare)
            .to_mermaid(),
    );
}

#[test]
fn a_split_whose_join_leads_nowhere_is_found() {
    let err = quotes(Quote::Nowhere).validate().unwrap_err().to_string();
    assert!(
        err.contains("split state Ask moves to Nowhere, which has no handler"),
        "{err}"
    );
}

#[test]
fn a_split_whose_join_never_reaches_an_exit_is_found() {
    let workflow = quotes(Quote::Compare).transitions(Quote::Compare, [Quote::Ask]);
    let err = workflow.validate_from(&Quote::Ask).unwrap_err().to_string();
    assert!(
        err.contains("state Ask can never reach an exit state")
            && err.contains("state Compare can never reach an exit state"),
        "{err}"
    );
}
