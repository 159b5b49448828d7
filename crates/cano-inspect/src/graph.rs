//! A workflow's recorded Mermaid drawing with one run on it: the states it went
//! through, the edges it took, and where it stands now.

use cano_core::checkpoint::catalog::{state_matches, variant_name};

/// A node of the drawing: its id (`s3`) and label.
struct Node {
    id: String,
    label: String,
}

/// The nodes of a drawing made by `Workflow::to_mermaid` (`    s3["Charge"]`).
fn nodes(drawing: &str) -> Vec<Node> {
    drawing
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix('s')?;
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            if digits == 0 || line.contains("-->") || line.contains("-.->") {
                return None;
            }
            let (first, last) = (line.find('"')?, line.rfind('"')?);
            (last > first).then(|| Node {
                id: line[..=digits].to_owned(),
                label: line[first + 1..last].replace("#quot;", "\""),
            })
        })
        .collect()
}

/// The edges in definition order (Mermaid numbers them so for `linkStyle`).
fn edges(drawing: &str) -> Vec<(String, String)> {
    drawing
        .lines()
        .filter(|line| line.contains("-->") || line.contains("-.->"))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let from = words.next()?.to_owned();
            let to = line.split_whitespace().last()?.to_owned();
            Some((from, to))
        })
        .collect()
}

/// The node of the drawing that shows the state whose `Debug` text is `label`: the
/// same text, or else the same variant (a state with fields is registered with one
/// value and run with others).
fn node_of<'a>(nodes: &'a [Node], label: &str) -> Option<&'a Node> {
    nodes.iter().find(|n| n.label == label).or_else(|| {
        nodes
            .iter()
            .find(|n| state_matches(variant_name(&n.label), label))
    })
}

/// `drawing` with the states of `path` (in the order the run entered them) marked as
/// visited, the edges between consecutive ones marked as taken, and `current` marked
/// as where the run stands (none when it is over).
pub fn highlight(drawing: &str, path: &[String], current: Option<&str>) -> String {
    let nodes = nodes(drawing);
    let edges = edges(drawing);
    let mut out = drawing.trim_end().to_owned();
    out.push_str("\n    classDef visited fill:#dbeafe,stroke:#1d4ed8,stroke-width:2px\n");
    out.push_str("    classDef current fill:#fde68a,stroke:#b45309,stroke-width:4px\n");
    let mut visited: Vec<&str> = Vec::new();
    for label in path {
        if let Some(node) = node_of(&nodes, label)
            && !visited.contains(&node.id.as_str())
        {
            visited.push(&node.id);
        }
    }
    if !visited.is_empty() {
        out.push_str(&format!("    class {} visited\n", visited.join(",")));
    }
    let mut taken: Vec<usize> = Vec::new();
    for pair in path.windows(2) {
        let (Some(a), Some(b)) = (node_of(&nodes, &pair[0]), node_of(&nodes, &pair[1])) else {
            continue;
        };
        if let Some(i) = edges.iter().position(|(f, t)| *f == a.id && *t == b.id)
            && !taken.contains(&i)
        {
            taken.push(i);
        }
    }
    if !taken.is_empty() {
        let list: Vec<String> = taken.iter().map(usize::to_string).collect();
        out.push_str(&format!(
            "    linkStyle {} stroke:#1d4ed8,stroke-width:3px\n",
            list.join(",")
        ));
    }
    if let Some(node) = current.and_then(|c| node_of(&nodes, c)) {
        out.push_str(&format!("    class {} current\n", node.id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWING: &str = "flowchart TD
    s0([\"Done\"])
    s1[\"Fetch\"]
    s2[\"Parse { strict: true }\"]
    s1 --> s2
    s2 --> s0
    s2 -.-> undeclared
    undeclared((\"not declared\"))
";

    #[test]
    fn the_path_and_the_current_state_are_marked() {
        let path = ["Fetch".to_owned(), "Parse { strict: true }".to_owned()];
        let out = highlight(DRAWING, &path, Some("Parse { strict: true }"));
        assert!(out.contains("class s1,s2 visited"), "{out}");
        assert!(out.contains("linkStyle 0 stroke"), "{out}");
        assert!(out.contains("class s2 current"), "{out}");
        let nodes = nodes(DRAWING);
        assert_eq!(node_of(&nodes, "Parse").map(|n| n.id.as_str()), Some("s2"));
    }

    #[test]
    fn states_the_drawing_lacks_change_nothing_but_the_styles() {
        let out = highlight(DRAWING, &["Elsewhere".to_owned()], Some("Nowhere"));
        assert!(out.starts_with(DRAWING.trim_end()));
        assert!(!out.contains("class s"), "{out}");
        assert!(!out.contains("linkStyle"), "{out}");
    }
}
