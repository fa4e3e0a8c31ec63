//! Draws an Orquesta workflow's declared graph as an inline `<svg>` element for the web console:
//! the tasks laid out in layers down their `next` transitions, each task coloured by the state
//! the caller gives it, so a page can show a run's progress and a script can recolour it live.
//!
//! Pure and synchronous: it reads a parsed [`Workflow`] and a map of task states and returns
//! text. It must never do I/O, look at the store or render a template (expressions are shown,
//! never evaluated), and no workflow text may reach the output unescaped.
//!
//! What the console can rely on in the output:
//! - the root is `<svg class="wf-graph" role="img" aria-label=... viewBox=...>`;
//! - each task is `<g class="node state-<state>" data-task="<name>">` (inside `<a href>` when it
//!   has a link), holding a `<title>`, a `rect.node-box`, `text.node-name`, `text.node-action`
//!   and, for with-items progress, `g.items-badge`; `<state>` is one of [`NodeState::as_str`];
//! - each transition target is `<g class="edge" data-from=... data-to=...>` (`edge back-edge`
//!   for a transition back up the graph), and each engine command a transition names is
//!   `<g class="terminal cmd-<command>" data-from=... data-command=...>`;
//! - colours come from [`STYLE`] (embedded in the element) with the same colours inline as
//!   presentation attributes, so the drawing reads even where the style sheet does not apply.

use std::collections::HashMap;
use std::fmt::Write;

use crate::workflow::model::ENGINE_COMMANDS;
use crate::workflow::{Join, Workflow};

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($($arg:tt)*) => {{
        let _ = write!($($arg)*);
    }};
}

/// A task's state as the console colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeState {
    /// Not started (yet).
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Canceled,
    /// Never reached: the run ended without taking a transition to it.
    Skipped,
}

impl NodeState {
    /// Every state, in the order [`STYLE`] lists them.
    pub const ALL: [NodeState; 6] = [
        NodeState::Pending,
        NodeState::Running,
        NodeState::Succeeded,
        NodeState::Failed,
        NodeState::Canceled,
        NodeState::Skipped,
    ];

    /// The word in the node's class: `state-<word>`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Pending => "pending",
            NodeState::Running => "running",
            NodeState::Succeeded => "succeeded",
            NodeState::Failed => "failed",
            NodeState::Canceled => "canceled",
            NodeState::Skipped => "skipped",
        }
    }

    /// From an execution's status word as StackStorm spells it: not yet started (requested,
    /// scheduled, delayed) is pending; running, pausing and paused are running; a canceling
    /// execution is drawn as canceled, a timeout or an abandoned one as failed; an unknown word
    /// as pending.
    pub fn from_status(status: &str) -> NodeState {
        match status {
            "succeeded" => NodeState::Succeeded,
            "failed" | "timeout" | "abandoned" => NodeState::Failed,
            "canceled" | "canceling" => NodeState::Canceled,
            "skipped" => NodeState::Skipped,
            "running" | "pausing" | "paused" => NodeState::Running,
            _ => NodeState::Pending,
        }
    }

    /// Fill and stroke, the same as in [`STYLE`], for the inline defaults.
    fn colours(self) -> (&'static str, &'static str) {
        match self {
            NodeState::Pending => ("#f3f4f6", "#9ca3af"),
            NodeState::Running => ("#dbeafe", "#2563eb"),
            NodeState::Succeeded => ("#dcfce7", "#16a34a"),
            NodeState::Failed => ("#fee2e2", "#dc2626"),
            NodeState::Canceled => ("#fef3c7", "#d97706"),
            NodeState::Skipped => ("#ffffff", "#d1d5db"),
        }
    }
}

/// What the console knows about one task of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub state: NodeState,
    /// With-items progress: items done and items in all.
    pub items_done: Option<(usize, usize)>,
    /// Where the task's execution is shown (a subworkflow's graph, an action's result). Only
    /// relative links and `http`/`https` links are drawn; anything else (`javascript:`) is left
    /// out.
    pub link: Option<String>,
}

/// The style sheet the SVG embeds, for a console that serves its own CSS (a strict
/// Content-Security-Policy blocks an embedded `<style>`): rules are scoped to `.wf-graph`.
pub const STYLE: &str = ".wf-graph .node-box{stroke-width:1.5px}\
.wf-graph .state-pending .node-box{fill:#f3f4f6;stroke:#9ca3af}\
.wf-graph .state-running .node-box{fill:#dbeafe;stroke:#2563eb}\
.wf-graph .state-succeeded .node-box{fill:#dcfce7;stroke:#16a34a}\
.wf-graph .state-failed .node-box{fill:#fee2e2;stroke:#dc2626}\
.wf-graph .state-canceled .node-box{fill:#fef3c7;stroke:#d97706}\
.wf-graph .state-skipped .node-box{fill:#ffffff;stroke:#d1d5db;stroke-dasharray:4 3}\
.wf-graph .state-skipped text{opacity:.6}\
.wf-graph .state-running .node-box{stroke-width:2.5px}\
.wf-graph a .node-box{cursor:pointer}\
.wf-graph a:hover .node-box{stroke-width:3px}";

/// The whole declared graph, laid out, as an inline `<svg>` element. Tasks missing from
/// `states` are drawn as pending.
pub fn workflow_svg(wf: &Workflow, states: &HashMap<String, NodeInfo>) -> String {
    let layout = Layout::of(wf);
    let mut out = String::with_capacity(2048 + 900 * layout.items.len());
    let tasks = wf.tasks.len();
    w!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"wf-graph\" viewBox=\"0 0 {0} {1}\" \
         width=\"{0}\" height=\"{1}\" role=\"img\" aria-label=\"Workflow graph: {2} task{3}\" \
         font-family=\"system-ui, -apple-system, 'Segoe UI', sans-serif\">",
        layout.width,
        layout.height,
        tasks,
        if tasks == 1 { "" } else { "s" }
    );
    w!(out, "<style>{STYLE}</style>");
    if tasks == 0 {
        w!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\" fill=\"#6b7280\">no tasks</text></svg>",
            layout.width / 2,
            layout.height / 2
        );
        return out;
    }

    out.push_str("<g class=\"edges\">");
    for edge in &layout.edges {
        draw_edge(&mut out, &layout, edge);
    }
    out.push_str("</g><g class=\"edge-labels\">");
    for label in &layout.labels {
        w!(
            out,
            "<text class=\"edge-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" \
             fill=\"#374151\" stroke=\"#ffffff\" stroke-width=\"3\" paint-order=\"stroke\">\
             <title>{}</title>{}</text>",
            label.x,
            label.y,
            esc(label.when),
            esc(&short_when(label.when))
        );
    }
    out.push_str("</g><g class=\"nodes\">");
    let pending = NodeInfo::default();
    for item in &layout.items {
        match item.kind {
            Kind::Task(name) => {
                let info = states.get(name).unwrap_or(&pending);
                draw_task(&mut out, wf, item, name, info);
            }
            Kind::Command { from, command } => draw_command(&mut out, item, from, command),
            Kind::Waypoint { .. } => {}
        }
    }
    out.push_str("</g></svg>");
    out
}

const NODE_W: i64 = 184;
const NODE_H: i64 = 52;
const COMMAND_H: i64 = 22;
const H_GAP: i64 = 36;
const MARGIN: i64 = 24;
/// Room between layers for the arrows, before the transition labels' rows.
const LAYER_GAP: i64 = 44;
const LABEL_ROW: i64 = 12;
/// How far out the first back edge runs beside the graph, and the step between back edges.
const BACK_OUT: i64 = 20;
const BACK_STEP: i64 = 12;
const ARROW: i64 = 7;
const WAYPOINT_W: i64 = 8;
const NAME_CHARS: usize = 23;
const ACTION_CHARS: usize = 27;
const LABEL_CHARS: usize = 24;

/// Something that takes a place in a layer: a task, an engine command a transition names, or
/// the place an edge passes through a layer it crosses.
struct Item<'a> {
    kind: Kind<'a>,
    layer: usize,
    x: i64,
    y: i64,
    w: i64,
    h: i64,
}

#[derive(Clone, Copy)]
enum Kind<'a> {
    Task(&'a str),
    /// One marker per transition target, drawn below the task it leaves.
    Command {
        from: &'a str,
        command: &'a str,
    },
    /// Keeps a layer clear where an edge spanning several layers passes, so it never runs
    /// through a box. Never drawn.
    Waypoint {
        edge: usize,
    },
}

/// One target of one transition: an arrow from the transition's port on the bottom of its task.
struct Edge {
    from: usize,
    to: usize,
    /// Points up the graph (a loop): drawn beside the graph into the target's right side.
    back: bool,
    /// Start, on the bottom of `from`.
    start: (i64, i64),
    /// Where the arrow's tip touches `to`.
    end: (i64, i64),
    /// For a back edge: the x of its run beside the graph.
    side_x: i64,
    /// For a forward edge spanning several layers: the waypoints it passes, top to bottom.
    via: Vec<usize>,
}

/// A transition's `when`, drawn once below its port.
struct Label<'a> {
    when: &'a str,
    x: i64,
    y: i64,
}

struct Layout<'a> {
    /// The tasks in declaration order, then the command markers.
    items: Vec<Item<'a>>,
    edges: Vec<Edge>,
    labels: Vec<Label<'a>>,
    width: i64,
    height: i64,
}

impl<'a> Layout<'a> {
    fn of(wf: &'a Workflow) -> Layout<'a> {
        let index: HashMap<&str, usize> = wf
            .tasks
            .keys()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i))
            .collect();
        let mut items: Vec<Item<'a>> = wf
            .tasks
            .keys()
            .map(|name| Item::new(Kind::Task(name), NODE_W, NODE_H))
            .collect();
        let tasks = items.len();

        // Edges, and for each task the transitions that get a port (those naming a target).
        let mut edges = Vec::new();
        let mut edge_transition = Vec::new();
        let mut ports: Vec<Vec<Option<usize>>> = Vec::with_capacity(tasks);
        for (from, (name, task)) in wf.tasks.iter().enumerate() {
            let mut task_ports = Vec::with_capacity(task.next.len());
            let mut count = 0;
            for (t, transition) in task.next.iter().enumerate() {
                if transition.targets.is_empty() {
                    task_ports.push(None);
                    continue;
                }
                task_ports.push(Some(count));
                count += 1;
                for target in &transition.targets {
                    let to = match index.get(target.as_str()) {
                        Some(&to) => to,
                        None => {
                            let w = 22 + 7 * target.chars().count().min(12) as i64;
                            items.push(Item::new(
                                Kind::Command {
                                    from: name,
                                    command: target,
                                },
                                w.max(44),
                                COMMAND_H,
                            ));
                            items.len() - 1
                        }
                    };
                    edges.push(Edge::new(from, to));
                    edge_transition.push(t);
                }
            }
            ports.push(task_ports);
        }

        let mut out_edges: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
        let mut has_inbound = vec![false; items.len()];
        for (e, edge) in edges.iter().enumerate() {
            out_edges[edge.from].push(e);
            has_inbound[edge.to] = true;
        }

        // Depth-first from the start tasks, then from any task still unvisited (a loop nothing
        // enters), in declaration order; an edge to a task on the current path is a back edge.
        // Iterative, so a long chain cannot exhaust the stack.
        const NEW: u8 = 0;
        const ON_PATH: u8 = 1;
        const DONE: u8 = 2;
        let mut mark = vec![NEW; items.len()];
        let mut post_order = Vec::with_capacity(items.len());
        let roots = (0..tasks)
            .filter(|&i| !has_inbound[i])
            .chain(0..tasks)
            .collect::<Vec<_>>();
        let mut stack: Vec<(usize, usize)> = Vec::new();
        for root in roots {
            if mark[root] != NEW {
                continue;
            }
            mark[root] = ON_PATH;
            stack.push((root, 0));
            while let Some((node, next)) = stack.last_mut() {
                let node = *node;
                if let Some(&e) = out_edges[node].get(*next) {
                    *next += 1;
                    let to = edges[e].to;
                    match mark[to] {
                        NEW => {
                            mark[to] = ON_PATH;
                            stack.push((to, 0));
                        }
                        ON_PATH => edges[e].back = true,
                        _ => {}
                    }
                } else {
                    mark[node] = DONE;
                    post_order.push(node);
                    stack.pop();
                }
            }
        }

        // Longest path over the edges left: in reverse post-order every such edge points forward.
        for &node in post_order.iter().rev() {
            let layer = items[node].layer;
            for &e in &out_edges[node] {
                if !edges[e].back {
                    let to = edges[e].to;
                    items[to].layer = items[to].layer.max(layer + 1);
                }
            }
        }

        // A waypoint in each layer a forward edge crosses.
        for (e, edge) in edges.iter_mut().enumerate().filter(|(_, e)| !e.back) {
            let (from, to) = (items[edge.from].layer, items[edge.to].layer);
            for layer in from + 1..to {
                let kind = Kind::Waypoint { edge: e };
                let mut waypoint = Item::new(kind, WAYPOINT_W, 0);
                waypoint.layer = layer;
                items.push(waypoint);
                edge.via.push(items.len() - 1);
            }
        }

        let layer_count = items.iter().map(|i| i.layer + 1).max().unwrap_or(1);
        let mut layers: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
        for (i, item) in items.iter().enumerate() {
            layers[item.layer].push(i);
        }
        let mut inbound: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
        for (e, edge) in edges.iter().enumerate() {
            inbound[edge.to].push(e);
        }

        // Rows of labels below each layer: the most `when`s any task of the layer shows.
        let labelled = |i: usize| {
            wf.tasks.get_index(i).map_or(0, |(_, task)| {
                task.next
                    .iter()
                    .filter(|t| t.when.is_some() && !t.targets.is_empty())
                    .count() as i64
            })
        };
        let row_widths: Vec<i64> = layers
            .iter()
            .map(|layer| {
                layer.iter().map(|&i| items[i].w).sum::<i64>()
                    + H_GAP * (layer.len() as i64 - 1).max(0)
            })
            .collect();
        let content_w = row_widths.iter().copied().max().unwrap_or(0).max(NODE_W);

        // Layer by layer, top down. Tasks keep their declaration order; command markers and
        // waypoints go among them where their edge comes down from, so they do not cross the
        // row to reach a far end.
        let mut y = MARGIN;
        for (l, row_width) in row_widths.iter().enumerate() {
            let arrival = |e: usize, i: usize| {
                let edge = &edges[e];
                match edge.via.iter().position(|&v| v == i) {
                    Some(k) if k > 0 => centre_x(&items[edge.via[k - 1]]),
                    _ => match edge.via.last() {
                        Some(&v) if v != i => centre_x(&items[v]),
                        _ => port_x(&items, &ports, edge.from, edge_transition[e]),
                    },
                }
            };
            let wanted = |i: usize| -> i64 {
                match items[i].kind {
                    Kind::Waypoint { edge, .. } => arrival(edge, i),
                    _ => {
                        let xs: Vec<i64> = inbound[i]
                            .iter()
                            .filter(|&&e| !edges[e].back)
                            .map(|&e| arrival(e, i))
                            .collect();
                        xs.iter().sum::<i64>() / (xs.len() as i64).max(1)
                    }
                }
            };
            let (tasks_here, mut others): (Vec<usize>, Vec<usize>) = layers[l]
                .iter()
                .partition(|&&i| matches!(items[i].kind, Kind::Task(_)));
            let tasks_here: Vec<(i64, usize)> =
                tasks_here.iter().map(|&i| (wanted(i), i)).collect();
            others.sort_by_cached_key(|&i| (wanted(i), i));
            let mut row = Vec::with_capacity(layers[l].len());
            let (mut t, mut o) = (0, 0);
            while t < tasks_here.len() || o < others.len() {
                let take_other = match (tasks_here.get(t), others.get(o)) {
                    (Some(&(want, _)), Some(&other)) => wanted(other) < want,
                    (None, Some(_)) => true,
                    _ => false,
                };
                if take_other {
                    row.push(others[o]);
                    o += 1;
                } else {
                    row.push(tasks_here[t].1);
                    t += 1;
                }
            }

            let mut x = MARGIN + (content_w - row_width) / 2;
            let height = row.iter().map(|&i| items[i].h).max().unwrap_or(0);
            let mut rows = 0;
            for &i in &row {
                items[i].x = x;
                items[i].y = y;
                if let Kind::Waypoint { .. } = items[i].kind {
                    items[i].h = height;
                }
                x += items[i].w + H_GAP;
                rows = rows.max(labelled(i));
            }
            layers[l] = row;
            y += height + LAYER_GAP + LABEL_ROW * rows;
        }
        let mut height = y - LAYER_GAP + MARGIN;
        let mut width = content_w + 2 * MARGIN;

        // Ports: a task's transitions spread along its bottom; arrows into a box spread along
        // its top (forward edges, ordered by where they come from) or its right side (back
        // edges).
        for (e, edge) in edges.iter_mut().enumerate() {
            let from = &items[edge.from];
            edge.start = (
                port_x(&items, &ports, edge.from, edge_transition[e]),
                from.y + from.h,
            );
        }
        let mut back_count = 0;
        for (to, arrows) in inbound.iter_mut().enumerate() {
            let item = &items[to];
            // Where each arrow comes from: its last waypoint, or its port.
            let from_x = |e: usize| {
                let edge = &edges[e];
                edge.via
                    .last()
                    .map_or(edge.start.0, |&v| centre_x(&items[v]))
            };
            arrows.sort_by_key(|&e| (edges[e].back, from_x(e), e));
            let forward = arrows.iter().filter(|&&e| !edges[e].back).count() as i64;
            let back = arrows.len() as i64 - forward;
            for (k, &e) in arrows.iter().enumerate() {
                let k = k as i64;
                edges[e].end = if edges[e].back {
                    (
                        item.x + item.w,
                        item.y + item.h * (k - forward + 1) / (back + 1),
                    )
                } else {
                    (item.x + item.w * (k + 1) / (forward + 1), item.y)
                };
            }
        }
        // Back edges run beside everything in the layers they span, each further out.
        let layer_right: Vec<i64> = layers
            .iter()
            .map(|l| {
                l.iter()
                    .map(|&i| items[i].x + items[i].w)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for edge in edges.iter_mut().filter(|e| e.back) {
            let (top, bottom) = (items[edge.to].layer, items[edge.from].layer);
            let right = layer_right[top.min(bottom)..=top.max(bottom)]
                .iter()
                .copied()
                .max()
                .unwrap_or(0);
            edge.side_x = right + BACK_OUT + BACK_STEP * back_count;
            back_count += 1;
            width = width.max(edge.side_x + MARGIN);
            height = height.max(edge.start.1 + 2 * ARROW + 16 + MARGIN);
        }

        let mut labels = Vec::new();
        for (from, (_, task)) in wf.tasks.iter().enumerate() {
            let bottom = items[from].y + items[from].h;
            let mut row = 0;
            for (t, transition) in task.next.iter().enumerate() {
                if let (Some(when), false) = (&transition.when, transition.targets.is_empty()) {
                    row += 1;
                    labels.push(Label {
                        when,
                        x: port_x(&items, &ports, from, t),
                        y: bottom + LABEL_ROW * row,
                    });
                }
            }
        }

        Layout {
            items,
            edges,
            labels,
            width,
            height,
        }
    }
}

/// Where a transition's port is on the bottom of its task: the transitions that name a target
/// spread evenly along it.
fn port_x(items: &[Item<'_>], ports: &[Vec<Option<usize>>], from: usize, t: usize) -> i64 {
    let item = &items[from];
    let task_ports = &ports[from];
    let count = task_ports.iter().flatten().count() as i64;
    let port = task_ports.get(t).copied().flatten().unwrap_or(0) as i64;
    item.x + item.w * (port + 1) / (count + 1)
}

fn centre_x(item: &Item<'_>) -> i64 {
    item.x + item.w / 2
}

impl Item<'_> {
    fn new(kind: Kind<'_>, w: i64, h: i64) -> Item<'_> {
        Item {
            kind,
            layer: 0,
            x: 0,
            y: 0,
            w,
            h,
        }
    }
}

impl Edge {
    fn new(from: usize, to: usize) -> Edge {
        Edge {
            from,
            to,
            back: false,
            start: (0, 0),
            end: (0, 0),
            side_x: 0,
            via: Vec::new(),
        }
    }
}

fn draw_edge(out: &mut String, layout: &Layout<'_>, edge: &Edge) {
    let name = |i: usize| match layout.items[i].kind {
        Kind::Task(name) => name,
        Kind::Command { command, .. } => command,
        Kind::Waypoint { .. } => "",
    };
    let (sx, sy) = edge.start;
    let (ex, ey) = edge.end;
    w!(
        out,
        "<g class=\"{}\" data-from=\"{}\" data-to=\"{}\">",
        if edge.back { "edge back-edge" } else { "edge" },
        esc(name(edge.from)),
        esc(name(edge.to))
    );
    let (d, arrow) = if edge.back {
        // Down out of the port, out to the side, up, and in to the target's right side.
        let (side, low) = (edge.side_x, sy + 16);
        let mid = (sy + ey) / 2;
        let tip = ex + ARROW;
        (
            format!(
                "M{sx} {sy}C{sx} {low} {side} {low} {side} {mid}C{side} {ey} {0} {ey} {tip} {ey}",
                tip + (side - tip) / 2
            ),
            format!(
                "M{ex} {ey}L{tip} {0}L{tip} {1}Z",
                ey - ARROW / 2 - 1,
                ey + ARROW / 2 + 1
            ),
        )
    } else {
        // Straight down through each waypoint, curving between layers.
        fn curve(d: &mut String, (px, py): (i64, i64), (qx, qy): (i64, i64)) {
            let mid = (py + qy) / 2;
            w!(d, "C{px} {mid} {qx} {mid} {qx} {qy}");
        }
        let tip = ey - ARROW;
        let mut d = format!("M{sx} {sy}");
        let mut at = (sx, sy);
        for &v in &edge.via {
            let item = &layout.items[v];
            let x = item.x + item.w / 2;
            curve(&mut d, at, (x, item.y));
            at = (x, item.y + item.h);
            w!(d, "L{} {}", at.0, at.1);
        }
        curve(&mut d, at, (ex, tip));
        (
            d,
            format!(
                "M{ex} {ey}L{0} {tip}L{1} {tip}Z",
                ex - ARROW / 2 - 1,
                ex + ARROW / 2 + 1
            ),
        )
    };
    w!(
        out,
        "<path class=\"edge-path\" d=\"{d}\" fill=\"none\" stroke=\"#6b7280\" stroke-width=\"1.5\"{}/>\
         <path class=\"edge-arrow\" d=\"{arrow}\" fill=\"#6b7280\"/></g>",
        if edge.back {
            " stroke-dasharray=\"5 3\""
        } else {
            ""
        }
    );
}

fn draw_task(out: &mut String, wf: &Workflow, item: &Item<'_>, name: &str, info: &NodeInfo) {
    let task = wf.tasks.get(name);
    let action = task.and_then(|t| t.action.as_deref());
    let state = info.state;
    let (fill, stroke) = state.colours();
    let link = info.link.as_deref().filter(|l| safe_link(l));
    if let Some(link) = link {
        w!(out, "<a href=\"{}\">", esc(link));
    }
    w!(
        out,
        "<g class=\"node state-{}\" data-task=\"{}\" transform=\"translate({} {})\">",
        state.as_str(),
        esc(name),
        item.x,
        item.y
    );

    let mut title = format!(
        "{name}\naction: {}\nstate: {}",
        action.unwrap_or("none"),
        state.as_str()
    );
    if let Some((done, all)) = info.items_done {
        w!(title, "\nitems: {done}/{all}");
    }
    match task.and_then(|t| t.join) {
        Some(Join::All) => title.push_str("\njoin: all"),
        Some(Join::Count(n)) => w!(title, "\njoin: {n}"),
        None => {}
    }
    if let Some(retry) = task.and_then(|t| t.retry.as_ref()) {
        w!(title, "\nretry: up to {} more time(s)", retry.count);
    }
    w!(out, "<title>{}</title>", esc(&title));

    w!(
        out,
        "<rect class=\"node-box\" width=\"{}\" height=\"{}\" rx=\"8\" fill=\"{fill}\" stroke=\"{stroke}\" \
         stroke-width=\"1.5\"{}/>",
        item.w,
        item.h,
        if state == NodeState::Skipped {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        }
    );
    if task.is_some_and(|t| t.join.is_some()) {
        // A synchronisation bar on the top edge: this task waits for its inbound transitions.
        w!(
            out,
            "<rect class=\"join-bar\" x=\"{}\" y=\"-3\" width=\"{}\" height=\"6\" rx=\"2\" fill=\"#374151\"/>",
            item.w / 4,
            item.w / 2
        );
    }
    w!(
        out,
        "<text class=\"node-name\" x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"13\" \
         font-weight=\"600\" fill=\"#111827\">{}</text>",
        item.w / 2,
        esc(&clip(name, NAME_CHARS))
    );
    w!(
        out,
        "<text class=\"node-action\" x=\"{}\" y=\"39\" text-anchor=\"middle\" font-size=\"11\" \
         fill=\"#4b5563\"{}>{}</text>",
        item.w / 2,
        if action.is_none() {
            " font-style=\"italic\""
        } else {
            ""
        },
        esc(&clip(action.unwrap_or("no action"), ACTION_CHARS))
    );
    if let Some((done, all)) = info.items_done {
        let text = format!("{done}/{all}");
        let bw = 14 + 7 * text.len() as i64;
        w!(
            out,
            "<g class=\"items-badge\" transform=\"translate({} -9)\"><rect width=\"{bw}\" height=\"18\" \
             rx=\"9\" fill=\"#1f2937\"/><text x=\"{}\" y=\"13\" text-anchor=\"middle\" font-size=\"11\" \
             fill=\"#ffffff\">{text}</text></g>",
            item.w - bw + 8,
            bw / 2
        );
    }
    out.push_str("</g>");
    if link.is_some() {
        out.push_str("</a>");
    }
}

fn draw_command(out: &mut String, item: &Item<'_>, from: &str, command: &str) {
    let (class, fill, stroke) = match command {
        "fail" => ("fail", "#fee2e2", "#dc2626"),
        "noop" => ("noop", "#f3f4f6", "#6b7280"),
        "continue" => ("continue", "#e0f2fe", "#0284c7"),
        // Not an engine command: only a hand-built workflow can name an unknown target.
        _ => ("unknown", "#ffffff", "#9ca3af"),
    };
    let what = if ENGINE_COMMANDS.contains(&command) {
        "engine command"
    } else {
        "unknown target"
    };
    w!(
        out,
        "<g class=\"terminal cmd-{class}\" data-from=\"{}\" data-command=\"{}\" transform=\"translate({} {})\">\
         <title>{} ({what}) after {}</title><rect width=\"{}\" height=\"{}\" rx=\"{}\" fill=\"{fill}\" \
         stroke=\"{stroke}\" stroke-width=\"1.5\"/><text x=\"{}\" y=\"15\" text-anchor=\"middle\" \
         font-size=\"11\" fill=\"#111827\">{}</text></g>",
        esc(from),
        esc(command),
        item.x,
        item.y,
        esc(command),
        esc(from),
        item.w,
        item.h,
        item.h / 2,
        item.w / 2,
        esc(&clip(command, 12))
    );
}

/// A `when` as an edge label: the expression without its `{{ }}` (or YAQL's `<% %>`), on one
/// line, clipped.
fn short_when(when: &str) -> String {
    let t = when.trim();
    let inner = t
        .strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .or_else(|| t.strip_prefix("<%").and_then(|s| s.strip_suffix("%>")))
        .unwrap_or(t);
    let one_line = inner.split_whitespace().collect::<Vec<_>>().join(" ");
    clip(&one_line, LABEL_CHARS)
}

/// At most `max` characters, the last one an ellipsis when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Relative links, and absolute ones over http(s): never `javascript:` or `data:`.
fn safe_link(link: &str) -> bool {
    let lower = link.trim_start().to_ascii_lowercase();
    let scheme_end = lower.find([':', '/', '?', '#']);
    match scheme_end {
        Some(i) if lower[i..].starts_with(':') => {
            lower.starts_with("http:") || lower.starts_with("https:")
        }
        _ => !lower.is_empty(),
    }
}

/// Text and attribute values for XML: the five special characters as entities, and characters
/// XML 1.0 cannot carry at all (control characters) as U+FFFD.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Workflow {
        Workflow::parse(text).unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn svg(wf: &Workflow) -> String {
        let out = workflow_svg(wf, &HashMap::new());
        assert_well_formed(&out);
        out
    }

    fn layer_of(layout: &Layout<'_>, task: &str) -> usize {
        layout
            .items
            .iter()
            .find(|i| matches!(i.kind, Kind::Task(n) if n == task))
            .unwrap_or_else(|| panic!("no task {task}"))
            .layer
    }

    fn item<'l>(layout: &'l Layout<'_>, task: &str) -> &'l Item<'l> {
        layout
            .items
            .iter()
            .find(|i| matches!(i.kind, Kind::Task(n) if n == task))
            .unwrap_or_else(|| panic!("no task {task}"))
    }

    /// Checks XML well-formedness by hand: one root, tags balanced and properly nested,
    /// attributes quoted, no raw `<` in values and no `&` that does not start an entity.
    fn assert_well_formed(xml: &str) {
        fn check_text(text: &str, context: &str) {
            let mut rest = text;
            while let Some(i) = rest.find('&') {
                let after = &rest[i + 1..];
                let end = after
                    .find(';')
                    .unwrap_or_else(|| panic!("bare & in {context}"));
                let entity = &after[..end];
                let ok = matches!(entity, "amp" | "lt" | "gt" | "quot" | "apos")
                    || (entity.starts_with('#')
                        && entity.len() > 1
                        && entity[1..].chars().all(|c| c.is_ascii_alphanumeric()));
                assert!(ok, "bad entity &{entity}; in {context}");
                rest = &after[end..];
            }
            assert!(!text.contains('<'), "raw < in {context}");
            assert!(
                !text
                    .chars()
                    .any(|c| (c as u32) < 0x20 && !"\t\n\r".contains(c)),
                "control character in {context}"
            );
        }

        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = xml;
        loop {
            let Some(open) = rest.find('<') else {
                check_text(rest, "text");
                assert!(
                    rest.trim().is_empty() || !stack.is_empty(),
                    "text after the root"
                );
                break;
            };
            check_text(&rest[..open], "text");
            assert!(
                rest[..open].trim().is_empty() || !stack.is_empty(),
                "text outside the root"
            );
            rest = &rest[open + 1..];
            // Find the tag's end, skipping `>` inside quoted values.
            let mut quote = None;
            let mut end = None;
            for (i, c) in rest.char_indices() {
                match (quote, c) {
                    (None, '"' | '\'') => quote = Some(c),
                    (Some(q), c) if c == q => quote = None,
                    (None, '>') => {
                        end = Some(i);
                        break;
                    }
                    (None, '<') => panic!("< inside a tag: {}", &rest[..i]),
                    _ => {}
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated tag"));
            let tag = &rest[..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack
                    .pop()
                    .unwrap_or_else(|| panic!("</{name}> closes nothing"));
                assert_eq!(top, name.trim(), "</{name}> closes <{top}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
            let name = &body[..name_end];
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "bad tag name {name:?}"
            );
            // Attributes: name="value" pairs, each name once.
            let mut attrs = body[name_end..].trim();
            let mut seen = Vec::new();
            while !attrs.is_empty() {
                let eq = attrs
                    .find('=')
                    .unwrap_or_else(|| panic!("attribute without value in <{tag}>"));
                let attr = attrs[..eq].trim();
                assert!(!seen.contains(&attr), "attribute {attr} twice in <{name}>");
                seen.push(attr);
                let value = &attrs[eq + 1..];
                let q = value.chars().next().unwrap_or(' ');
                assert!(q == '"' || q == '\'', "unquoted {attr} in <{name}>");
                let close = value[1..]
                    .find(q)
                    .unwrap_or_else(|| panic!("unterminated {attr}"));
                check_text(&value[1..1 + close], attr);
                attrs = value[close + 2..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert_eq!(roots, 1, "one root element");
    }

    const LINEAR: &str = "version: 1.0\ntasks:\n  fetch:\n    action: http.get\n    next:\n      - when: \"{{ succeeded() }}\"\n        do: parse\n  parse:\n    action: core.noop\n    next:\n      - do: store\n  store:\n    action: sql.insert\n";

    #[test]
    fn a_linear_workflow_takes_three_layers() {
        let wf = parse(LINEAR);
        let layout = Layout::of(&wf);
        assert_eq!(
            ["fetch", "parse", "store"].map(|t| layer_of(&layout, t)),
            [0, 1, 2]
        );
        let (a, b, c) = (
            item(&layout, "fetch"),
            item(&layout, "parse"),
            item(&layout, "store"),
        );
        assert!(a.y + a.h < b.y && b.y + b.h < c.y);
        assert_eq!((a.x, b.x), (b.x, c.x), "one column");
        assert!(layout.edges.iter().all(|e| !e.back));

        let out = svg(&wf);
        assert!(out.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(out.contains(&format!(
            "viewBox=\"0 0 {} {}\"",
            layout.width, layout.height
        )));
        assert!(out.contains("role=\"img\" aria-label=\"Workflow graph: 3 tasks\""));
        assert_eq!(out.matches("<g class=\"node ").count(), 3);
        assert_eq!(out.matches("<g class=\"edge\"").count(), 2);
        assert!(out.contains("data-from=\"fetch\" data-to=\"parse\""));
        assert!(out.contains(">http.get</text>"));
        // Only the conditional transition gets a label, in short form.
        assert_eq!(out.matches("class=\"edge-label\"").count(), 1);
        assert!(out.contains("<title>{{ succeeded() }}</title>succeeded()</text>"));
        // Edges run from the bottom of the source to the top of the target.
        let edge = &layout.edges[0];
        assert_eq!(edge.start.1, a.y + a.h);
        assert_eq!(edge.end.1, b.y);
    }

    #[test]
    fn fan_out_and_join_all() {
        let wf = parse(
            "version: 1.0\ntasks:\n  setup:\n    next:\n      - do: [p1, p2, p3]\n  p1:\n    action: core.noop\n    next:\n      - when: \"{{ succeeded() }}\"\n        do: barrier\n  p2:\n    action: core.noop\n    next:\n      - when: \"{{ succeeded() }}\"\n        do: middle\n  middle:\n    action: core.noop\n    next:\n      - when: \"{{ succeeded() }}\"\n        do: barrier\n  barrier:\n    join: all\n    action: core.noop\n  p3:\n    action: core.noop\n",
        );
        let layout = Layout::of(&wf);
        assert_eq!(
            ["setup", "p1", "p2", "p3", "middle", "barrier"].map(|t| layer_of(&layout, t)),
            [0, 1, 1, 1, 2, 3],
            "longest path puts the join below the longer branch"
        );
        let [p1, p2, p3] = ["p1", "p2", "p3"].map(|t| item(&layout, t));
        assert!(p1.y == p2.y && p2.y == p3.y, "one row");
        assert!(
            p1.x + p1.w < p2.x && p2.x + p2.w < p3.x,
            "side by side in order"
        );
        // Both arrows into the join land on its top, apart.
        let barrier = item(&layout, "barrier");
        let ends: Vec<_> = layout
            .edges
            .iter()
            .filter(|e| matches!(layout.items[e.to].kind, Kind::Task("barrier")))
            .map(|e| e.end)
            .collect();
        assert_eq!(ends.len(), 2);
        assert!(ends.iter().all(|&(_, y)| y == barrier.y));
        assert_ne!(ends[0].0, ends[1].0);
        // The edge from p1 skips middle's layer beside it, not through it.
        let middle = item(&layout, "middle");
        let long = layout
            .edges
            .iter()
            .find(|e| e.from == 1 && matches!(layout.items[e.to].kind, Kind::Task("barrier")))
            .unwrap();
        assert_eq!(long.via.len(), 1);
        let waypoint = &layout.items[long.via[0]];
        assert_eq!((waypoint.y, waypoint.h), (middle.y, middle.h));
        assert!(waypoint.x + waypoint.w < middle.x || waypoint.x > middle.x + middle.w);
        let out = svg(&wf);
        assert!(out.contains(&format!(
            "L{} {}",
            waypoint.x + waypoint.w / 2,
            middle.y + middle.h
        )));
        // The fan-out's three edges leave one port.
        let starts: Vec<_> = layout.edges.iter().filter(|e| e.from == 0).collect();
        assert_eq!(starts.len(), 3);
        assert!(starts.iter().all(|e| e.start == starts[0].start));

        assert_eq!(out.matches("<g class=\"node ").count(), 6);
        assert_eq!(out.matches("<g class=\"edge\"").count(), 6);
        assert_eq!(out.matches("class=\"join-bar\"").count(), 1);
        assert!(out.contains("join: all</title>"));
        assert!(out.contains("font-style=\"italic\">no action</text>"));
    }

    #[test]
    fn a_retry_loop_is_drawn_as_a_back_edge() {
        let wf = parse(
            "version: 1.0\ntasks:\n  deploy:\n    action: k8s.apply\n    next:\n      - do: verify\n  verify:\n    action: http.get\n    next:\n      - when: \"{{ failed() }}\"\n        do: deploy\n      - when: \"{{ succeeded() }}\"\n        do: done\n  done:\n    action: core.noop\n",
        );
        let layout = Layout::of(&wf);
        assert_eq!(
            ["deploy", "verify", "done"].map(|t| layer_of(&layout, t)),
            [0, 1, 2]
        );
        let back: Vec<_> = layout.edges.iter().filter(|e| e.back).collect();
        assert_eq!(back.len(), 1);
        assert_eq!((back[0].from, back[0].to), (1, 0));
        // It runs beside the nodes and comes into the target's right side.
        let deploy = item(&layout, "deploy");
        assert!(back[0].side_x > deploy.x + deploy.w);
        assert_eq!(back[0].end.0, deploy.x + deploy.w);
        assert!(layout.width >= back[0].side_x + MARGIN);

        let out = svg(&wf);
        assert!(
            out.contains("<g class=\"edge back-edge\" data-from=\"verify\" data-to=\"deploy\">")
        );
        assert!(out.contains(">failed()</text>"));
    }

    #[test]
    fn loops_nothing_enters_and_self_loops_are_laid_out() {
        let wf = parse(
            "version: 1.0\ntasks:\n  start:\n    action: core.noop\n    next:\n      - do: spin\n  spin:\n    next:\n      - do: spin\n",
        );
        let layout = Layout::of(&wf);
        assert_eq!(["start", "spin"].map(|t| layer_of(&layout, t)), [0, 1]);
        assert_eq!(layout.edges.iter().filter(|e| e.back).count(), 1);
        svg(&wf);

        // Every task in a loop: no start task at all.
        let mut wf = parse(LINEAR);
        let first = wf.tasks.keys().next().cloned().unwrap_or_default();
        if let Some(last) = wf.tasks.get_index_mut(2) {
            last.1.next.push(crate::workflow::Transition {
                when: None,
                publish: Vec::new(),
                targets: vec![first],
            });
        }
        assert!(wf.start_tasks().is_empty());
        let layout = Layout::of(&wf);
        assert_eq!(
            ["fetch", "parse", "store"].map(|t| layer_of(&layout, t)),
            [0, 1, 2]
        );
        assert_eq!(layout.edges.iter().filter(|e| e.back).count(), 1);
        assert!(svg(&wf).contains("class=\"edge back-edge\" data-from=\"store\""));
    }

    #[test]
    fn engine_commands_are_terminal_markers() {
        let wf = parse(
            "version: 1.0\ntasks:\n  check:\n    action: http.get\n    next:\n      - when: \"{{ succeeded() and result().code == 200 }}\"\n        do: done\n      - when: \"{{ succeeded() and result().code != 200 }}\"\n        do: [log, fail]\n      - when: \"{{ failed() }}\"\n        do: noop\n  log:\n    action: core.echo\n    next: [{do: continue}]\n  done:\n    action: core.noop\n",
        );
        let layout = Layout::of(&wf);
        let out = svg(&wf);
        assert_eq!(
            out.matches("<g class=\"node ").count(),
            3,
            "commands are no tasks"
        );
        assert!(out
            .contains("<g class=\"terminal cmd-fail\" data-from=\"check\" data-command=\"fail\""));
        assert!(out
            .contains("<g class=\"terminal cmd-noop\" data-from=\"check\" data-command=\"noop\""));
        assert!(out.contains(
            "<g class=\"terminal cmd-continue\" data-from=\"log\" data-command=\"continue\""
        ));
        assert!(out.contains("data-from=\"check\" data-to=\"fail\""));
        // A marker sits one layer below the task it leaves.
        for marker in layout.items.iter() {
            if let Kind::Command { from, .. } = marker.kind {
                assert_eq!(marker.layer, layer_of(&layout, from) + 1);
            }
        }
        // Long expressions are clipped, in full in the label's title.
        assert!(out.contains("<title>{{ succeeded() and result().code == 200 }}</title>succeeded() and result(…</text>"));
        // Three labelled transitions leave the same node on three rows.
        let ys: Vec<_> = layout.labels.iter().map(|l| l.y).collect();
        assert_eq!(ys.len(), 3);
        assert!(ys[0] < ys[1] && ys[1] < ys[2]);
    }

    #[test]
    fn names_actions_and_expressions_are_escaped() {
        let wf = parse(
            "version: 1.0\ntasks:\n  \"a<&>\\\"b'\":\n    action: \"{{ ctx().act }}\"\n    next:\n      - when: \"{{ ctx().n < 3 and ctx().s == 'x&y' }}\"\n        do: \"c\\x01d\"\n  \"c\\x01d\":\n    action: core.noop\n",
        );
        let out = svg(&wf);
        assert!(
            out.contains("data-task=\"a&lt;&amp;&gt;&quot;b&apos;\""),
            "{out}"
        );
        assert!(out.contains(">a&lt;&amp;&gt;&quot;b&apos;</text>"));
        assert!(out.contains(">{{ ctx().act }}</text>"));
        assert!(out.contains(">ctx().n &lt; 3 and ctx().s…</text>"));
        assert!(
            out.contains("<title>{{ ctx().n &lt; 3 and ctx().s == &apos;x&amp;y&apos; }}</title>")
        );
        assert!(out.contains("data-task=\"c\u{FFFD}d\""));
        assert!(!out.contains("a<&>"));
    }

    #[test]
    fn states_become_classes_badges_and_links() {
        let wf = parse(LINEAR);
        let mut states = HashMap::new();
        states.insert(
            "fetch".to_string(),
            NodeInfo {
                state: NodeState::Succeeded,
                items_done: None,
                link: Some("/executions/01J&x=1".to_string()),
            },
        );
        states.insert(
            "parse".to_string(),
            NodeInfo {
                state: NodeState::Running,
                items_done: Some((3, 10)),
                link: Some("javascript:alert(1)".to_string()),
            },
        );
        let out = workflow_svg(&wf, &states);
        assert_well_formed(&out);
        assert!(out.contains("<a href=\"/executions/01J&amp;x=1\"><g class=\"node state-succeeded\" data-task=\"fetch\""));
        assert!(out.contains("<g class=\"node state-running\" data-task=\"parse\""));
        assert!(!out.contains("javascript"), "unsafe links are dropped");
        assert!(out.contains("<g class=\"node state-pending\" data-task=\"store\""));
        assert_eq!(out.matches("<a href").count(), 1);
        assert!(out.contains("<g class=\"items-badge\""));
        assert!(out.contains(">3/10</text>"));
        assert!(out.contains("state: running\nitems: 3/10</title>"));
        // Inline colours match the style sheet's for each state, so it reads without CSS.
        assert!(out.contains("fill=\"#dbeafe\" stroke=\"#2563eb\""));
        assert!(out.contains("fill=\"#dcfce7\" stroke=\"#16a34a\""));
        for state in NodeState::ALL {
            let (fill, stroke) = state.colours();
            let rule = format!(
                ".wf-graph .state-{} .node-box{{fill:{fill};stroke:{stroke}",
                state.as_str()
            );
            assert!(STYLE.contains(&rule), "{rule}");
            assert_eq!(NodeState::from_status(state.as_str()), state);
        }
        for (status, state) in [
            ("requested", NodeState::Pending),
            ("paused", NodeState::Running),
            ("canceling", NodeState::Canceled),
            ("timeout", NodeState::Failed),
        ] {
            assert_eq!(NodeState::from_status(status), state, "{status}");
        }
        assert!(out.contains(&format!("<style>{STYLE}</style>")));

        for (link, safe) in [
            ("/x", true),
            ("x/y?z=a:b", true),
            ("#t", true),
            ("https://st2.example/#/history", true),
            ("HTTP://a", true),
            (" JavaScript:alert(1)", false),
            ("data:text/html,x", false),
            ("", false),
        ] {
            assert_eq!(safe_link(link), safe, "{link}");
        }
    }

    #[test]
    fn a_hundred_task_workflow_is_laid_out() {
        // A chain of 100 tasks where every tenth fans out to the next three, which the task
        // after them joins.
        let mut text = String::from("version: 1.0\ntasks:\n");
        for i in 0..100 {
            w!(text, "  t{i:03}:\n    action: core.noop\n");
            if i % 10 == 0 && i + 4 < 100 {
                w!(
                    text,
                    "    next:\n      - when: \"{{{{ succeeded() }}}}\"\n        do: [t{:03}, t{:03}, t{:03}]\n",
                    i + 1,
                    i + 2,
                    i + 3
                );
            } else if i % 10 >= 1 && i % 10 <= 3 && i + 1 < 100 {
                w!(text, "    next:\n      - do: t{:03}\n", i - i % 10 + 4);
            } else if i + 1 < 100 {
                w!(text, "    next:\n      - do: t{:03}\n", i + 1);
            }
            if i % 10 == 4 {
                text.push_str("    join: all\n");
            }
        }
        let wf = parse(&text);
        let layout = Layout::of(&wf);
        assert_eq!(layer_of(&layout, "t000"), 0);
        // Each block of ten tasks takes eight layers: the three fanned-out tasks share one.
        assert_eq!(layer_of(&layout, "t099"), 79);
        assert!(layout.edges.iter().all(|e| !e.back));
        let out = svg(&wf);
        assert_eq!(out.matches("<g class=\"node ").count(), 100);
        assert_eq!(out.matches("class=\"join-bar\"").count(), 10);
    }

    #[test]
    fn the_engines_example_workflows_render() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workflow_cases");
        let mut drawn = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path().join("workflow.yaml");
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(wf) = Workflow::parse(&text) else {
                continue;
            };
            let out = svg(&wf);
            assert_eq!(
                out.matches("<g class=\"node ").count(),
                wf.tasks.len(),
                "{}",
                path.display()
            );
            drawn += 1;
        }
        assert!(drawn >= 20, "only {drawn} example workflows found");
    }

    #[test]
    fn a_workflow_without_tasks_still_draws() {
        let mut wf = parse(LINEAR);
        wf.tasks.clear();
        let out = svg(&wf);
        assert!(out.contains("aria-label=\"Workflow graph: 0 tasks\""));
        assert!(out.contains(">no tasks</text>"));
    }
}
