//! The workflow as a graph: declared transitions, checks over the whole graph from an
//! initial state, and Mermaid and DOT drawings of the definition.
//!
//! A state's edges are what its registration declared ([`Workflow::transitions`]), or
//! what its handler knows (a split moves to its join state, a router to the targets it
//! declares). A state with neither may move anywhere: checks give it the benefit of the
//! doubt, and drawings say "not declared" rather than invent edges.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use super::{Handler, Workflow, WorkflowState};
use crate::error::CanoError;
use crate::resource::ResourceKey;

/// Where a state may go.
enum Edges<S> {
    /// Only to these states.
    To(Vec<S>),
    /// Anywhere: nothing was declared.
    Any,
    /// Nowhere: an exit state.
    Exit,
}

/// One state of the drawing.
struct Node<S> {
    state: S,
    label: String,
    kind: &'static str,
    tasks: Vec<String>,
    edges: Edges<S>,
    /// What leads along each edge, when the handler says (a wait's signals).
    labels: Vec<(String, S)>,
}

impl<S: WorkflowState, K: ResourceKey> Workflow<S, K> {
    /// Declares the states `state`'s task may move to. [`validate`](Self::validate)
    /// checks each is registered or an exit state, [`validate_from`](Self::validate_from)
    /// checks the whole graph, drawings show the edges, and a run whose task returns a
    /// state outside them fails with [`CanoError::Workflow`] naming both states.
    /// Undeclared states cost nothing and may move anywhere.
    pub fn transitions(mut self, state: S, targets: impl IntoIterator<Item = S>) -> Self {
        let targets: Arc<[S]> = targets.into_iter().collect();
        let spec = self.spec_mut();
        let slot = spec.slots.entry(state).or_insert_with(super::Slot::empty);
        slot.targets = Some(targets);
        slot.refresh();
        self
    }

    fn edges(&self, state: &S) -> Edges<S> {
        let Some(slot) = self.spec.slots.get(state) else {
            return Edges::Any;
        };
        if slot.exit {
            return Edges::Exit;
        }
        if let Some(targets) = &slot.targets {
            return Edges::To(targets.to_vec());
        }
        match &slot.handler {
            Some(Handler::Custom(custom)) => custom.targets().map_or(Edges::Any, Edges::To),
            _ => Edges::Any,
        }
    }

    /// [`validate`](Self::validate), then checks the graph as runs from `initial` would
    /// walk it: every registered state is reachable from `initial`, and every state
    /// reached can still reach an exit state. Only declared edges are followed; a state
    /// that declared nothing may move anywhere, so it hides no finding. Every finding
    /// names its states, in one [`CanoError::Configuration`].
    pub fn validate_from(&self, initial: &S) -> Result<(), CanoError> {
        self.validate()?;
        self.validate_initial_state(initial)?;
        let findings = self.graph_findings(initial);
        if findings.is_empty() {
            Ok(())
        } else {
            Err(CanoError::configuration(format!(
                "invalid workflow graph: {}",
                findings.join("; ")
            )))
        }
    }

    fn graph_findings(&self, initial: &S) -> Vec<String> {
        let spec = &*self.spec;
        let mut findings = Vec::new();
        // Forward from the initial state.
        let mut reached: HashSet<&S> = HashSet::new();
        let mut open = false;
        let mut queue = VecDeque::from([initial]);
        let mut edges_of = std::collections::HashMap::new();
        for state in spec.slots.keys() {
            edges_of.insert(state, self.edges(state));
        }
        while let Some(state) = queue.pop_front() {
            if !reached.insert(state) {
                continue;
            }
            match edges_of.get(state) {
                Some(Edges::To(targets)) => {
                    for target in targets {
                        if let Some((key, _)) = spec.slots.get_key_value(target) {
                            queue.push_back(key);
                        }
                    }
                }
                Some(Edges::Any) => open = true,
                _ => {}
            }
        }
        if !open {
            let mut unreachable: Vec<String> = spec
                .slots
                .iter()
                .filter(|(s, slot)| slot.handler.is_some() && !reached.contains(s))
                .map(|(s, _)| format!("{s:?}"))
                .collect();
            unreachable.sort();
            for state in unreachable {
                findings.push(format!(
                    "state {state} is never reached from {initial:?}; declare a transition to it or remove it"
                ));
            }
        }
        // Backward from the exits: a state reaches an exit if any edge does.
        let mut escapes: HashSet<&S> = spec
            .slots
            .iter()
            .filter(|(s, slot)| slot.exit || matches!(edges_of.get(s), Some(Edges::Any)))
            .map(|(s, _)| s)
            .collect();
        loop {
            let before = escapes.len();
            for (state, edges) in &edges_of {
                if let Edges::To(targets) = edges
                    && targets.iter().any(|t| escapes.contains(t))
                {
                    escapes.insert(state);
                }
            }
            if escapes.len() == before {
                break;
            }
        }
        let mut stuck: Vec<(String, String)> = reached
            .iter()
            .filter(|s| !escapes.contains(*s))
            .filter_map(|s| match edges_of.get(s) {
                Some(Edges::To(targets)) => Some((format!("{s:?}"), format!("{targets:?}"))),
                _ => None,
            })
            .collect();
        stuck.sort();
        for (state, targets) in stuck {
            findings.push(format!(
                "state {state} can never reach an exit state (it only moves to {targets}); add a transition that leads to one"
            ));
        }
        findings
    }

    fn nodes(&self) -> Vec<Node<S>> {
        let mut nodes: Vec<Node<S>> = self
            .spec
            .slots
            .iter()
            .map(|(state, slot)| {
                let (kind, tasks) = match &slot.handler {
                    Some(handler) => {
                        let info = handler.info();
                        (
                            info.kind,
                            info.tasks.iter().map(|t| t.to_string()).collect(),
                        )
                    }
                    None if slot.exit => ("exit", Vec::new()),
                    None => ("unregistered", Vec::new()),
                };
                let labels = match &slot.handler {
                    Some(Handler::Custom(custom)) if slot.targets.is_none() => {
                        custom.labelled_targets().unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                Node {
                    label: format!("{state:?}"),
                    state: state.clone(),
                    kind,
                    tasks,
                    edges: self.edges(state),
                    labels,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.label.cmp(&b.label));
        nodes
    }

    /// The graph as a Mermaid flowchart: tasks as boxes, routers as diamonds, splits as
    /// subroutine boxes (their edge to the join state lists the branches),
    /// compensatable states as parallelograms, wait states as cylinders (their edges
    /// labelled with the signal or `timeout` that leads there), exit states as
    /// stadiums. A state that
    /// declared no transitions gets a dotted edge to a "not declared" marker instead of
    /// invented edges. States are listed in `Debug` order, so the text is stable.
    pub fn to_mermaid(&self) -> String {
        let nodes = self.nodes();
        let id = |state: &S| node_id(&nodes, state);
        let mut out = String::from("flowchart TD\n");
        let mut any = false;
        for (i, node) in nodes.iter().enumerate() {
            let label = mermaid_text(&node.label);
            let shape = match node.kind {
                "exit" => format!("([\"{label}\"])"),
                "router" => format!("{{\"{label}\"}}"),
                "split" => format!("[[\"{label}\"]]"),
                "compensatable" => format!("[/\"{label}\"/]"),
                "wait" => format!("[(\"{label}\")]"),
                _ => format!("[\"{label}\"]"),
            };
            let _ = writeln!(out, "    s{i}{shape}");
        }
        for (i, node) in nodes.iter().enumerate() {
            match &node.edges {
                Edges::To(targets) if node.kind == "split" => {
                    let branches = mermaid_text(&node.tasks.join(", "));
                    for target in targets {
                        let _ = writeln!(out, "    s{i} -- \"{branches}\" --> {}", id(target));
                    }
                }
                Edges::To(_) if !node.labels.is_empty() => {
                    for (label, target) in &node.labels {
                        let label = mermaid_text(label);
                        let _ = writeln!(out, "    s{i} -- \"{label}\" --> {}", id(target));
                    }
                }
                Edges::To(targets) => {
                    for target in targets {
                        let _ = writeln!(out, "    s{i} --> {}", id(target));
                    }
                }
                Edges::Any if node.kind != "unregistered" => {
                    any = true;
                    let _ = writeln!(out, "    s{i} -.-> undeclared");
                }
                _ => {}
            }
        }
        if any {
            out.push_str("    undeclared((\"not declared\"))\n");
        }
        out
    }

    /// The graph in Graphviz DOT, with the same shapes and edges as
    /// [`to_mermaid`](Self::to_mermaid).
    pub fn to_dot(&self) -> String {
        let nodes = self.nodes();
        let id = |state: &S| node_id(&nodes, state);
        let mut out = String::from("digraph workflow {\n    rankdir=TB;\n");
        let mut any = false;
        for (i, node) in nodes.iter().enumerate() {
            let shape = match node.kind {
                "exit" => "doublecircle",
                "router" => "diamond",
                "split" => "box3d",
                "compensatable" => "parallelogram",
                "wait" => "cylinder",
                _ => "box",
            };
            let _ = writeln!(
                out,
                "    s{i} [label={}, shape={shape}];",
                dot_text(&node.label)
            );
        }
        for (i, node) in nodes.iter().enumerate() {
            match &node.edges {
                Edges::To(_) if !node.labels.is_empty() => {
                    for (label, target) in &node.labels {
                        let _ = writeln!(
                            out,
                            "    s{i} -> {} [label={}];",
                            id(target),
                            dot_text(label)
                        );
                    }
                }
                Edges::To(targets) => {
                    let label = match node.kind {
                        "split" => format!(" [label={}]", dot_text(&node.tasks.join(", "))),
                        _ => String::new(),
                    };
                    for target in targets {
                        let _ = writeln!(out, "    s{i} -> {}{label};", id(target));
                    }
                }
                Edges::Any if node.kind != "unregistered" => {
                    any = true;
                    let _ = writeln!(out, "    s{i} -> undeclared [style=dotted];");
                }
                _ => {}
            }
        }
        if any {
            out.push_str("    undeclared [label=\"not declared\", shape=circle, style=dashed];\n");
        }
        out.push_str("}\n");
        out
    }
}

/// The drawing id of `state` (`s` and its place in `nodes`); a target that is not a
/// state of the workflow, which `validate` reports, is drawn as `unknown`.
fn node_id<S: PartialEq>(nodes: &[Node<S>], state: &S) -> String {
    nodes
        .iter()
        .position(|n| n.state == *state)
        .map_or_else(|| "unknown".to_owned(), |i| format!("s{i}"))
}

/// Text for a Mermaid label: quotes and brackets replaced by their entity codes.
fn mermaid_text(text: &str) -> String {
    text.replace('"', "#quot;")
}

/// A DOT string literal.
fn dot_text(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
