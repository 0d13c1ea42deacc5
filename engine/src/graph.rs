//! Graph: the DAG of workspace packages and service images. An edge runs from the dependent to
//! its dependency; an image depends on its package and on any in-repo image it builds `FROM`.

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use crate::dockerfile::Dockerfile;
use crate::workspace::Workspace;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Package(usize),
    Image(usize),
}

/// The package and image graph of a workspace.
#[derive(Debug)]
pub struct Graph {
    pub dag: DiGraph<Node, ()>,
    package_nodes: Vec<NodeIndex>,
    image_nodes: Vec<NodeIndex>,
    /// For each service: the services whose images it builds `FROM`.
    pub image_deps: Vec<Vec<usize>>,
}

impl Graph {
    /// Builds the graph; `dockerfiles[s]` is service `s`'s parsed Dockerfile, if read.
    pub fn build(ws: &Workspace, dockerfiles: &[Option<&Dockerfile>]) -> Result<Graph> {
        let mut dag = DiGraph::new();
        let package_nodes: Vec<NodeIndex> = (0..ws.packages.len())
            .map(|i| dag.add_node(Node::Package(i)))
            .collect();
        for (i, p) in ws.packages.iter().enumerate() {
            let mut seen = std::collections::BTreeSet::new();
            for d in &p.dependencies {
                if let Some(t) = d.workspace {
                    if seen.insert(t) {
                        dag.add_edge(package_nodes[i], package_nodes[t], ());
                    }
                }
            }
        }
        let image_nodes: Vec<NodeIndex> = (0..ws.services.len())
            .map(|s| dag.add_node(Node::Image(s)))
            .collect();
        let mut image_deps = vec![Vec::new(); ws.services.len()];
        for (s, svc) in ws.services.iter().enumerate() {
            dag.add_edge(image_nodes[s], package_nodes[svc.package], ());
            if let Some(Some(df)) = dockerfiles.get(s) {
                for (reference, _) in df.external_images() {
                    let name = strip_tag(&reference);
                    if let Some(t) = ws.services.iter().position(|o| o.image == name) {
                        if !image_deps[s].contains(&t) {
                            image_deps[s].push(t);
                            dag.add_edge(image_nodes[s], image_nodes[t], ());
                        }
                    }
                }
            }
        }
        let g = Graph {
            dag,
            package_nodes,
            image_nodes,
            image_deps,
        };
        g.check_acyclic(ws)?;
        Ok(g)
    }

    fn check_acyclic(&self, ws: &Workspace) -> Result<()> {
        if toposort(&self.dag, None).is_ok() {
            return Ok(());
        }
        // Name one cycle: the smallest strongly connected component with more than one node
        // (or a self-loop), walked from its first node.
        let mut sccs: Vec<Vec<NodeIndex>> = tarjan_scc(&self.dag)
            .into_iter()
            .filter(|c| c.len() > 1 || self.dag.contains_edge(c[0], c[0]))
            .collect();
        sccs.sort_by_key(|c| c.len());
        let Some(scc) = sccs.first() else {
            return Ok(());
        };
        let in_scc = |n: NodeIndex| scc.contains(&n);
        let start = *scc
            .iter()
            .min_by_key(|n| self.label(ws, **n))
            .unwrap_or(&scc[0]);
        let mut path = vec![start];
        let mut cur = start;
        loop {
            let next = self
                .dag
                .neighbors(cur)
                .filter(|n| in_scc(*n))
                .min_by_key(|n| self.label(ws, *n));
            let Some(next) = next else { break };
            if let Some(pos) = path.iter().position(|n| *n == next) {
                let mut cycle: Vec<String> =
                    path[pos..].iter().map(|n| self.label(ws, *n)).collect();
                cycle.push(self.label(ws, next));
                return Err(Error::Cycle { cycle });
            }
            path.push(next);
            cur = next;
        }
        Err(Error::Cycle {
            cycle: scc.iter().map(|n| self.label(ws, *n)).collect(),
        })
    }

    fn label(&self, ws: &Workspace, n: NodeIndex) -> String {
        match self.dag[n] {
            Node::Package(p) => ws.packages[p].display_name().to_string(),
            Node::Image(s) => format!("image {}", ws.services[s].image),
        }
    }

    /// Services in an order where every image comes after the images it builds `FROM`.
    pub fn image_order(&self) -> Vec<usize> {
        let order = toposort(&self.dag, None).unwrap_or_default();
        let mut out: Vec<usize> = order
            .into_iter()
            .rev()
            .filter_map(|n| match self.dag[n] {
                Node::Image(s) => Some(s),
                Node::Package(_) => None,
            })
            .collect();
        if out.len() != self.image_nodes.len() {
            out = (0..self.image_nodes.len()).collect();
        }
        out
    }

    pub fn package_node(&self, p: usize) -> NodeIndex {
        self.package_nodes[p]
    }

    /// The graph as data for `graph --format json`: packages (the root aside) and their edges.
    pub fn to_json(&self, ws: &Workspace) -> GraphJson {
        let service_of = |p: usize| ws.services.iter().find(|s| s.package == p);
        let mut packages: Vec<PackageJson> = ws
            .packages
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_root())
            .map(|(i, p)| PackageJson {
                name: p.display_name().to_string(),
                dir: p.dir.clone(),
                kind: if service_of(i).is_some() {
                    "service"
                } else {
                    "library"
                },
                image: service_of(i).map(|s| s.image.clone()),
            })
            .collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        let mut edges = Vec::new();
        for (i, p) in ws.packages.iter().enumerate() {
            if p.is_root() {
                continue;
            }
            for e in self.dag.neighbors(self.package_nodes[i]) {
                if let Node::Package(t) = self.dag[e] {
                    if !ws.packages[t].is_root() {
                        edges.push(EdgeJson {
                            from: p.display_name().to_string(),
                            to: ws.packages[t].display_name().to_string(),
                            kind: "package",
                        });
                    }
                }
            }
        }
        for (s, deps) in self.image_deps.iter().enumerate() {
            for &t in deps {
                edges.push(EdgeJson {
                    from: ws.packages[ws.services[s].package]
                        .display_name()
                        .to_string(),
                    to: ws.packages[ws.services[t].package]
                        .display_name()
                        .to_string(),
                    kind: "image",
                });
            }
        }
        edges.sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        edges.dedup_by(|a, b| a.from == b.from && a.to == b.to);
        GraphJson { packages, edges }
    }

    /// Graphviz DOT: services as boxes, libraries as ellipses.
    pub fn to_dot(&self, ws: &Workspace) -> String {
        let j = self.to_json(ws);
        let mut out =
            String::from("digraph workspace {\n  rankdir=LR;\n  node [fontname=\"Helvetica\"];\n");
        for p in &j.packages {
            let shape = if p.kind == "service" {
                "box"
            } else {
                "ellipse"
            };
            let label = match &p.image {
                Some(i) => format!("{}\\n{}", p.name, i),
                None => p.name.clone(),
            };
            out.push_str(&format!(
                "  \"{}\" [shape={shape}, label=\"{label}\"];\n",
                p.name
            ));
        }
        for e in &j.edges {
            let style = if e.kind == "image" {
                " [style=dashed]"
            } else {
                ""
            };
            out.push_str(&format!("  \"{}\" -> \"{}\"{style};\n", e.from, e.to));
        }
        out.push_str("}\n");
        out
    }

    /// A plain tree: each package with its workspace dependencies.
    pub fn to_text(&self, ws: &Workspace) -> String {
        let j = self.to_json(ws);
        let mut out = String::new();
        for p in &j.packages {
            let what = match &p.image {
                Some(i) => format!("service -> image {i}"),
                None => "library".to_string(),
            };
            out.push_str(&format!("{} ({}) [{what}]\n", p.name, p.dir));
            for e in j.edges.iter().filter(|e| e.from == p.name) {
                let via = if e.kind == "image" { " (FROM)" } else { "" };
                out.push_str(&format!("  └─ {}{via}\n", e.to));
            }
        }
        out
    }
}

/// `name:tag` or `name@digest` -> `name`.
pub fn strip_tag(reference: &str) -> &str {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

#[derive(Debug, Serialize)]
pub struct GraphJson {
    pub packages: Vec<PackageJson>,
    pub edges: Vec<EdgeJson>,
}

#[derive(Debug, Serialize)]
pub struct PackageJson {
    pub name: String,
    pub dir: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EdgeJson {
    pub from: String,
    pub to: String,
    /// `package` (a workspace dependency) or `image` (builds `FROM` the other's image).
    pub kind: &'static str,
}

#[cfg(test)]
mod tests {
    use super::strip_tag;

    #[test]
    fn strips_tags_and_digests() {
        assert_eq!(strip_tag("node:18-alpine"), "node");
        assert_eq!(strip_tag("localhost:5000/x:1"), "localhost:5000/x");
        assert_eq!(strip_tag("localhost:5000/x"), "localhost:5000/x");
        assert_eq!(strip_tag("x@sha256:abc"), "x");
    }
}
