//! Where a model's nodes run under a provider profile: MEASURED from ONNX Runtime's own
//! profiling output when the provider is in the library, PREDICTED from the profile's
//! declared op support and limits (by walking the ONNX graph) when it is not.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use lockstep_core::{Error, Result};
use lockstep_model::onnx::{attribute_type, NodeProto, OnnxFile, ValueInfoProto};

use crate::profile::{op_key, Declared, ProviderProfile};

const CPU_EP: &str = "CPUExecutionProvider";

/// How a report was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// Read from ONNX Runtime's per-node profiling events after one forward pass.
    Measured,
    /// Derived from the profile; the string says why nothing was measured.
    Predicted(String),
}

/// One op type's nodes.
#[derive(Debug, Clone, Default)]
pub struct OpPlacement {
    /// `MatMul`, or `com.microsoft.MatMulNBits` outside the standard domain.
    pub op: String,
    pub count: usize,
    /// Nodes on the profile's provider.
    pub on_ep: usize,
    /// Nodes on ONNX Runtime's CPU provider (the fallback).
    pub on_cpu: usize,
    /// Why nodes are on the CPU (empty when none are), op support first.
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PlacementReport {
    pub profile: String,
    pub ep_name: String,
    pub method: Method,
    /// What the nodes are: the converted graph, or what ONNX Runtime ran after fusing.
    pub scope: String,
    pub ops: Vec<OpPlacement>,
}

impl PlacementReport {
    pub fn total(&self) -> usize {
        self.ops.iter().map(|o| o.count).sum()
    }

    pub fn on_ep(&self) -> usize {
        self.ops.iter().map(|o| o.on_ep).sum()
    }

    pub fn on_cpu(&self) -> usize {
        self.ops.iter().map(|o| o.on_cpu).sum()
    }

    pub fn op(&self, op: &str) -> Option<&OpPlacement> {
        self.ops
            .iter()
            .find(|o| o.op == op || o.op.ends_with(&format!(".{op}")))
    }

    /// Op types with at least one node on the CPU under a non-CPU provider.
    pub fn cpu_ops(&self) -> Vec<&str> {
        if self.ep_name == CPU_EP {
            return Vec::new();
        }
        self.ops
            .iter()
            .filter(|o| o.on_cpu > 0)
            .map(|o| o.op.as_str())
            .collect()
    }

    /// A table, one row per op type, and a summary line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let method = match &self.method {
            Method::Measured => {
                "MEASURED (ONNX Runtime's profiling output, one forward pass)".to_string()
            }
            Method::Predicted(why) => {
                format!("PREDICTED from the profile's declared op support ({why})")
            }
        };
        let _ = writeln!(
            s,
            "placement under {} ({}): {method}",
            self.profile, self.ep_name
        );
        let _ = writeln!(s, "nodes: {}", self.scope);
        let op_w = self
            .ops
            .iter()
            .map(|o| o.op.len())
            .max()
            .unwrap_or(0)
            .max(7);
        if self.ep_name == CPU_EP {
            // One provider: no fallback column, no reasons.
            let _ = writeln!(s, "{:<op_w$}  {:>5}  {:>5}", "op type", "count", "CPU");
            for o in &self.ops {
                let _ = writeln!(s, "{:<op_w$}  {:>5}  {:>5}", o.op, o.count, o.on_ep);
            }
        } else {
            let ep_col = short_ep(&self.ep_name);
            let ep_w = ep_col.len().max(5);
            let _ = writeln!(
                s,
                "{:<op_w$}  {:>5}  {:>ep_w$}  {:>5}  reason for CPU",
                "op type", "count", ep_col, "CPU"
            );
            for o in &self.ops {
                let reason = if o.on_cpu == 0 {
                    "-".to_string()
                } else {
                    o.reasons.join("; ")
                };
                let _ = writeln!(
                    s,
                    "{:<op_w$}  {:>5}  {:>ep_w$}  {:>5}  {reason}",
                    o.op, o.count, o.on_ep, o.on_cpu
                );
            }
        }
        let verb = if matches!(self.method, Method::Measured) {
            "ran"
        } else {
            "would run"
        };
        if self.ep_name == CPU_EP {
            let _ = writeln!(
                s,
                "total: {} nodes; {} {verb} on {CPU_EP}",
                self.total(),
                self.on_ep()
            );
        } else {
            let _ = writeln!(
                s,
                "total: {} nodes; {} {verb} on {}, {} on {CPU_EP}",
                self.total(),
                self.on_ep(),
                self.ep_name,
                self.on_cpu()
            );
        }
        s
    }
}

fn short_ep(name: &str) -> &str {
    name.strip_suffix("ExecutionProvider").unwrap_or(name)
}

/// Ops whose output's largest dimension is the largest of their inputs' (broadcasting
/// keeps the largest), for following a big dimension such as the vocabulary downstream.
const ELEMENTWISE: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Where",
    "Cast",
    "Neg",
    "Sqrt",
    "Tanh",
    "Sigmoid",
    "Softmax",
    "Relu",
    "Erf",
    "Gelu",
    "Cos",
    "Sin",
    "Equal",
    "Less",
    "Greater",
    "BitwiseAnd",
    "Reciprocal",
    "Clip",
    "Softplus",
    "Max",
    "Min",
    "Exp",
    "Log",
    "Abs",
    "Not",
    "And",
    "Or",
];

/// Predicts placement by walking `model_onnx`'s graph: a node goes to the provider when
/// the profile declares its op supported, no input has a dimension over the profile's
/// limit, and (where the profile requires it) its input shapes are static.
pub fn predict(model_onnx: &Path, profile: &ProviderProfile, why: &str) -> Result<PlacementReport> {
    let file = OnnxFile::open(model_onnx)?;
    let graph = file.graph();
    // Largest known dimension of each tensor (0: unknown), and whether its shape is dynamic.
    let mut max_dim: HashMap<&str, i64> = HashMap::new();
    let mut dynamic: HashSet<&str> = HashSet::new();
    for t in &graph.initializer {
        max_dim.insert(&t.name, t.dims.iter().copied().max().unwrap_or(0));
    }
    for v in graph
        .input
        .iter()
        .chain(&graph.value_info)
        .chain(&graph.output)
    {
        let (largest, is_dynamic) = value_dims(v);
        if largest > 0 {
            let e = max_dim.entry(v.name.as_str()).or_insert(0);
            *e = (*e).max(largest);
        }
        if is_dynamic && graph.input.iter().any(|i| i.name == v.name) {
            dynamic.insert(v.name.as_str());
        }
    }
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();

    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for node in &graph.node {
        let inputs: Vec<&str> = node
            .input
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let in_max = |name: &str| max_dim.get(name).copied().unwrap_or(0);
        let largest_input = inputs.iter().map(|n| in_max(n)).max().unwrap_or(0);
        let dynamic_input = inputs
            .iter()
            .any(|n| dynamic.contains(n) && !initializers.contains(n));

        let key = op_key(&node.domain, &node.op_type);
        // Every rule that keeps the node off the provider, each counted per op type.
        let mut reasons: Vec<String> = Vec::new();
        match profile.declares(&node.domain, &node.op_type) {
            Declared::Supported => {}
            Declared::Unsupported if node.domain.is_empty() => {
                reasons.push("declared unsupported (ONNX Runtime contrib op)".into())
            }
            Declared::Unsupported => {
                reasons.push(format!("{} contrib op, declared unsupported", node.domain))
            }
            Declared::NotListed => reasons.push("not a declared op".into()),
        }
        let mut too_big = 0;
        if let Some(limit) = profile.support.max_dim {
            if largest_input > limit {
                too_big = largest_input;
                reasons.push(format!("input dimension > {limit}"));
            }
        }
        if profile.requires_static_shapes() && dynamic_input {
            reasons.push("dynamic input shape (static shapes required)".into());
        }
        let row = tallies.entry(key.clone()).or_insert_with(|| Tally {
            row: OpPlacement {
                op: key,
                ..Default::default()
            },
            ..Default::default()
        });
        row.row.count += 1;
        if reasons.is_empty() {
            row.row.on_ep += 1;
        } else {
            row.row.on_cpu += 1;
            row.largest = row.largest.max(too_big);
            for r in reasons {
                *row.reasons.entry(r).or_default() += 1;
            }
        }

        // Propagate what is known to the node's outputs.
        let out_max = output_max_dim(node, &inputs, &max_dim, largest_input);
        let out_dynamic = dynamic_input && !matches!(node.op_type.as_str(), "Shape" | "Size");
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if out_max > 0 {
                let e = max_dim.entry(out.as_str()).or_insert(0);
                *e = (*e).max(out_max);
            }
            if out_dynamic {
                dynamic.insert(out.as_str());
            }
        }
    }
    Ok(PlacementReport {
        profile: profile.name.clone(),
        ep_name: profile.ep_name().to_string(),
        method: Method::Predicted(why.to_string()),
        scope: format!(
            "the converted graph's {} nodes as written in {} (before ONNX Runtime's own fusions)",
            graph.node.len(),
            model_onnx.display()
        ),
        ops: sorted(tallies.into_iter().map(|(k, t)| (k, t.finish())).collect()),
    })
}

/// One op type's prediction while the graph is walked.
#[derive(Default)]
struct Tally {
    row: OpPlacement,
    /// Reason -> nodes it applies to.
    reasons: BTreeMap<String, usize>,
    /// The largest input dimension over the limit.
    largest: i64,
}

impl Tally {
    fn finish(mut self) -> OpPlacement {
        let cpu = self.row.on_cpu;
        let rank = |r: &str| {
            if r.starts_with("input dimension") {
                1
            } else if r.starts_with("dynamic") {
                2
            } else {
                0
            }
        };
        let mut reasons: Vec<(String, usize)> = self.reasons.into_iter().collect();
        reasons.sort_by_key(|(r, _)| rank(r));
        for (reason, n) in reasons {
            let reason = if reason.starts_with("input dimension") {
                reason.replace(
                    "input dimension",
                    &format!("input dimension up to {}", self.largest),
                )
            } else {
                reason
            };
            let r = if n == cpu {
                reason
            } else {
                format!("{reason} ({n} of {cpu})")
            };
            self.row.reasons.push(r);
        }
        self.row
    }
}

fn value_dims(v: &ValueInfoProto) -> (i64, bool) {
    let Some(shape) = v
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .and_then(|t| t.shape.as_ref())
    else {
        return (0, true);
    };
    let mut largest = 0;
    let mut is_dynamic = false;
    for d in &shape.dim {
        match d.dim_value {
            Some(v) if v > 0 => largest = largest.max(v),
            _ => is_dynamic = true,
        }
    }
    (largest, is_dynamic)
}

fn int_attr(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute
        .iter()
        .find(|a| a.name == name && a.r#type == attribute_type::INT)
        .map(|a| a.i)
}

/// The largest dimension known for a node's outputs (0: unknown).
fn output_max_dim(
    node: &NodeProto,
    inputs: &[&str],
    max_dim: &HashMap<&str, i64>,
    largest_input: i64,
) -> i64 {
    let known = |i: usize| {
        inputs
            .get(i)
            .and_then(|n| max_dim.get(n))
            .copied()
            .unwrap_or(0)
    };
    match (node.domain.as_str(), node.op_type.as_str()) {
        ("com.microsoft", "MatMulNBits") => int_attr(node, "N").unwrap_or(0),
        ("", "MatMul") | ("", "Gemm") => known(1),
        ("", "Gather") => known(0),
        ("", op) if ELEMENTWISE.contains(&op) => largest_input,
        _ => 0,
    }
}

fn sorted(rows: BTreeMap<String, OpPlacement>) -> Vec<OpPlacement> {
    let mut ops: Vec<OpPlacement> = rows.into_values().collect();
    // Most nodes first; ties by name, so that the table is stable.
    ops.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.op.cmp(&b.op)));
    ops
}

/// Aggregates ONNX Runtime's profiling JSON (Chrome trace events) by op type: each
/// `Node` event's `args.op_name` and `args.provider`, one per node (its kernel time).
pub fn from_profile_json(
    json: &str,
    profile: &ProviderProfile,
    source_nodes: usize,
) -> Result<PlacementReport> {
    let events: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::Runtime(format!("cannot read ONNX Runtime's profile: {e}")))?;
    let events = events
        .as_array()
        .ok_or_else(|| Error::Runtime("ONNX Runtime's profile is not a JSON array".into()))?;
    let ep = profile.ep_name();
    // node name -> (op, provider); a node runs once per forward but has several events.
    let mut nodes: BTreeMap<String, (String, String)> = BTreeMap::new();
    for e in events {
        if e.get("cat").and_then(|c| c.as_str()) != Some("Node") {
            continue;
        }
        let Some(name) = e.get("name").and_then(|n| n.as_str()) else {
            continue;
        };
        let Some(node) = name.strip_suffix("_kernel_time") else {
            continue;
        };
        let args = e.get("args");
        let field = |k: &str| {
            args.and_then(|a| a.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        nodes.insert(node.to_string(), (field("op_name"), field("provider")));
    }
    if nodes.is_empty() {
        return Err(Error::Runtime(
            "ONNX Runtime's profile has no per-node events; nothing to measure".into(),
        ));
    }
    let mut rows: BTreeMap<String, OpPlacement> = BTreeMap::new();
    for (op, provider) in nodes.into_values() {
        let row = rows.entry(op.clone()).or_insert_with(|| OpPlacement {
            op: op.clone(),
            ..Default::default()
        });
        row.count += 1;
        if provider == ep {
            row.on_ep += 1;
        } else {
            row.on_cpu += 1;
            // Profiling names the op without its domain; contrib ops live in com.microsoft.
            let declared = match profile.declares("", &op) {
                Declared::NotListed => profile.declares("com.microsoft", &op),
                d => d,
            };
            let reason = match declared {
                Declared::Supported if provider == CPU_EP => {
                    "ONNX Runtime kept it on the CPU (shape, dimension or partition rule)".into()
                }
                Declared::Supported => format!("ran on {provider}"),
                _ => format!("{} did not take it (not a declared op)", short_ep(ep)),
            };
            if !row.reasons.contains(&reason) {
                row.reasons.push(reason);
            }
        }
    }
    Ok(PlacementReport {
        profile: profile.name.clone(),
        ep_name: ep.to_string(),
        method: Method::Measured,
        scope: format!(
            "the nodes ONNX Runtime ran, after its graph optimizations (the converted graph has {source_nodes})"
        ),
        ops: sorted(rows),
    })
}
