//! Self-contained HTML pages: a run's timeline (who was master when, where the network was cut,
//! when each write was invoked and answered, where an invariant broke) and a suite's grid.
//!
//! Every page carries its own CSS, SVG and a little JavaScript (zoom by dragging on the
//! timeline, a text filter on the trace) and fetches nothing. Without JavaScript everything is
//! still there: the whole run's timeline and every trace line. Sites are named as in the
//! scenario (A, B, ...), with the address on hover. The timeline is read from the trace lines
//! the simulator writes (`<ms> <site-or-world> <what>`) and the run's client history, so it
//! needs nothing the reports do not already get; the same run always renders to the same bytes.

// HTML takes XML's escaping for attribute values, which is also safe in element content.
use crate::xml::attr as esc;
use crate::{is_failure, seconds, ReplayCommand};
use sim::result::{RunResult, Tallies};
use std::fmt::Write as _;

/// Width of the plot, in SVG units (the page scales it to the window).
const PLOT_W: f64 = 1000.0;
/// Left margin for the lane names.
const LABEL_W: f64 = 70.0;
/// Height of a site's lane.
const LANE_H: f64 = 26.0;
/// Gap between lanes.
const LANE_GAP: f64 = 8.0;
/// Height of a site's row of writes.
const WRITES_H: f64 = 14.0;
/// Height of the time axis.
const AXIS_H: f64 = 24.0;

/// What a site was doing over a stretch of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Master of this generation.
    Master(u64),
    /// Following a master (or looking for one).
    Client,
    /// In an election.
    Electing,
    /// Crashed, not yet restarted.
    Down,
    /// Paused (a stopped process, connections open).
    Paused,
}

impl State {
    fn class(self) -> &'static str {
        match self {
            State::Master(_) => "master",
            State::Client => "client",
            State::Electing => "electing",
            State::Down => "down",
            State::Paused => "paused",
        }
    }

    fn describe(self) -> String {
        match self {
            State::Master(gen) => format!("master of generation {gen}"),
            State::Client => "client".into(),
            State::Electing => "electing".into(),
            State::Down => "down".into(),
            State::Paused => "paused".into(),
        }
    }
}

/// A stretch of one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Band {
    pub(crate) from: u64,
    pub(crate) to: u64,
    pub(crate) state: State,
}

/// Something that happened at an instant on a lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) ms: u64,
    /// CSS class and short kind: `elected`, `election-failed`, `rollback`, `init`, `join`,
    /// `removal`, `crash`, `restart`, `storage`, `duplicate`, `perm-failed`.
    pub(crate) kind: &'static str,
    /// What it was, for the tooltip.
    pub(crate) what: String,
}

/// A stretch when the network cut some sites off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cut {
    pub(crate) from: u64,
    pub(crate) to: u64,
    /// The lanes on the cut-off side.
    pub(crate) lanes: Vec<usize>,
    pub(crate) what: String,
}

/// One site's lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lane {
    pub(crate) name: String,
    pub(crate) addr: String,
    pub(crate) bands: Vec<Band>,
    pub(crate) marks: Vec<Mark>,
}

/// A run's timeline, read from its trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Picture {
    pub(crate) end: u64,
    pub(crate) lanes: Vec<Lane>,
    pub(crate) cuts: Vec<Cut>,
}

/// Reads a run's trace into lanes, bands, marks and cuts.
pub(crate) fn picture(run: &RunResult) -> Picture {
    let mut lanes: Vec<Lane> = run
        .sites
        .iter()
        .map(|s| Lane {
            name: s.name.clone(),
            addr: s.addr.clone(),
            bands: Vec::new(),
            marks: Vec::new(),
        })
        .collect();
    let lines: Vec<_> = run
        .trace
        .iter()
        .map(|l| crate::timeline::parse(l))
        .collect();
    if lanes.is_empty() {
        // A run without the scenario's names: its sites as the trace shows them, in order.
        let mut addrs: Vec<&str> = lines
            .iter()
            .filter(|l| l.ms.is_some() && l.who.contains(':'))
            .map(|l| l.who)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        lanes = addrs
            .into_iter()
            .map(|a| Lane {
                name: a.to_string(),
                addr: a.to_string(),
                bands: Vec::new(),
                marks: Vec::new(),
            })
            .collect();
    }
    let end = run
        .sim_ms
        .max(lines.iter().filter_map(|l| l.ms).max().unwrap_or(0))
        .max(1);
    // Per lane: the state it is in and since when.
    let mut now: Vec<Option<(State, u64)>> = vec![None; lanes.len()];
    let mut before_pause: Vec<Option<State>> = vec![None; lanes.len()];
    let mut open_cuts: Vec<(u64, Vec<usize>, String, bool)> = Vec::new();
    let mut cuts = Vec::new();
    let lane_of = |addr: &str, lanes: &[Lane]| lanes.iter().position(|l| l.addr == addr);
    for line in &lines {
        let Some(ms) = line.ms else { continue };
        if line.who == "world" {
            let what = line.what;
            if let Some(rest) = what.strip_prefix("partition ") {
                let side = rest.split(" | ").next().unwrap_or("");
                let members = quoted(side)
                    .iter()
                    .filter_map(|a| lane_of(a, &lanes))
                    .collect();
                open_cuts.push((ms, members, what.to_string(), false));
            } else if let Some(rest) = what.strip_prefix("cut ") {
                let side = rest.split(" <-> ").next().unwrap_or("");
                let members = quoted(side)
                    .iter()
                    .filter_map(|a| lane_of(a, &lanes))
                    .collect();
                open_cuts.push((ms, members, what.to_string(), true));
            } else if let Some(rest) = what.strip_prefix("clog ") {
                let from = rest.split(" -> ").next().unwrap_or("");
                let members = lane_of(from, &lanes).into_iter().collect();
                open_cuts.push((ms, members, what.to_string(), false));
            } else if what == "heal" || what.starts_with("mend ") {
                let mend_only = what != "heal";
                let (closing, open): (Vec<_>, Vec<_>) =
                    open_cuts.drain(..).partition(|c| !mend_only || c.3);
                open_cuts = open;
                for (from, lanes, what, _) in closing {
                    cuts.push(Cut {
                        from,
                        to: ms,
                        lanes,
                        what,
                    });
                }
            }
            continue;
        }
        let Some(i) = lane_of(line.who, &lanes) else {
            continue;
        };
        let what = line.what;
        let mut mark = |kind: &'static str, text: String| {
            lanes[i].marks.push(Mark {
                ms,
                kind,
                what: text,
            })
        };
        let next = if what.starts_with("started") {
            Some(State::Client)
        } else if what.starts_with("crashed") {
            mark("crash", what.to_string());
            Some(State::Down)
        } else if what.starts_with("restarted") {
            mark("restart", what.to_string());
            Some(State::Client)
        } else if what == "paused" {
            before_pause[i] = now[i].map(|(s, _)| s);
            Some(State::Paused)
        } else if what == "resumed" {
            Some(before_pause[i].take().unwrap_or(State::Client))
        } else if let Some(event) = what.strip_prefix("Site(") {
            let event = event.strip_suffix(')').unwrap_or(event);
            let kind = event.split([' ', '{']).next().unwrap_or("");
            match kind {
                "BecameMaster" => Some(State::Master(number_after(event, "gen: ").unwrap_or(0))),
                "BecameClient" | "NewMaster" => Some(State::Client),
                "MasterFailure" => Some(State::Electing),
                "Voted" if event.contains(&format!("candidate: \"{}\"", line.who)) => {
                    Some(State::Electing)
                }
                "Elected" => {
                    mark("elected", event.to_string());
                    None
                }
                "ElectionFailed" => {
                    mark("election-failed", event.to_string());
                    Some(State::Client)
                }
                "RolledBack" => {
                    let txns = event
                        .split("txns: [")
                        .nth(1)
                        .and_then(|t| t.split(']').next())
                        .map_or(0, |t| t.split(',').filter(|x| !x.trim().is_empty()).count());
                    mark(
                        "rollback",
                        format!("rolled back {txns} transactions: {event}"),
                    );
                    None
                }
                "InitDone" => {
                    mark("init", event.to_string());
                    None
                }
                "SiteAdded" | "JoinFailure" => {
                    mark("join", event.to_string());
                    None
                }
                "SiteRemoved" | "LocalSiteRemoved" => {
                    mark("removal", event.to_string());
                    None
                }
                "StorageFailed" => {
                    mark("storage", event.to_string());
                    None
                }
                "DuplicateMaster" => {
                    mark("duplicate", event.to_string());
                    None
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some(state) = next {
            let lane = &mut lanes[i];
            match now[i] {
                Some((s, _)) if s == state => {}
                Some((s, since)) => {
                    if ms > since {
                        lane.bands.push(Band {
                            from: since,
                            to: ms,
                            state: s,
                        });
                    }
                    now[i] = Some((state, ms));
                }
                None => now[i] = Some((state, ms)),
            }
        }
    }
    for (lane, state) in lanes.iter_mut().zip(&now) {
        if let Some((s, since)) = *state {
            if end > since {
                lane.bands.push(Band {
                    from: since,
                    to: end,
                    state: s,
                });
            }
        }
    }
    for (from, lanes, what, _) in open_cuts {
        cuts.push(Cut {
            from,
            to: end,
            lanes,
            what,
        });
    }
    Picture { end, lanes, cuts }
}

/// The quoted strings of `text` (`["a", "b"]` gives a, b).
fn quoted(text: &str) -> Vec<&str> {
    text.split('"').skip(1).step_by(2).collect()
}

/// The number right after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = text.split(key).nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// x of `ms` on the full-run scale.
fn x(ms: u64, end: u64) -> f64 {
    LABEL_W + PLOT_W * ms as f64 / end as f64
}

/// The timeline as an SVG element: lanes, role bands, marks, cuts, violations, the writes under
/// them, and a time axis. Every plotted element carries its times (`data-t0`, `data-t1`) so the
/// page's script can lay it out again for a zoomed range.
pub fn timeline_svg(run: &RunResult) -> String {
    let pic = picture(run);
    let end = pic.end;
    let n = pic.lanes.len();
    let lane_y = |i: usize| AXIS_H + i as f64 * (LANE_H + LANE_GAP);
    let writers: Vec<usize> = (0..n)
        .filter(|&i| run.history.iter().any(|w| w.site == pic.lanes[i].addr))
        .collect();
    let writes_top = lane_y(n) + 6.0;
    let height = writes_top + writers.len() as f64 * (WRITES_H + 4.0) + 8.0;
    let width = LABEL_W + PLOT_W + 10.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0} {height:.0}" data-end="{end}" role="img" aria-label="timeline of the run">"#
    );
    let _ = write!(
        s,
        r#"<clipPath id="plot"><rect x="{LABEL_W}" y="0" width="{PLOT_W}" height="{height:.0}"/></clipPath>"#
    );
    // The axis: a tick every "nice" step.
    let step = nice_step(end);
    s.push_str(r#"<g class="axis">"#);
    let mut t = 0;
    while t <= end {
        let _ = write!(
            s,
            r#"<g class="tick" data-t0="{t}"><line x1="{x:.1}" x2="{x:.1}" y1="{a:.0}" y2="{height:.0}"/><text x="{x:.1}" y="{ty:.0}">{label}s</text></g>"#,
            x = x(t, end),
            a = AXIS_H - 6.0,
            ty = AXIS_H - 10.0,
            label = seconds(t).trim_end_matches('0').trim_end_matches('.'),
        );
        t += step;
    }
    s.push_str("</g>");
    // Lane names, outside the zoomed area.
    for (i, lane) in pic.lanes.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text class="lane-name" x="4" y="{y:.0}" data-lane="{name}"><title>{addr}</title>{name}</text>"#,
            y = lane_y(i) + LANE_H / 2.0 + 4.0,
            name = esc(&lane.name),
            addr = esc(&lane.addr),
        );
    }
    for (k, &i) in writers.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text class="writes-name" x="4" y="{y:.0}"><title>writes asked of {addr}</title>{name} writes</text>"#,
            y = writes_top + k as f64 * (WRITES_H + 4.0) + WRITES_H - 3.0,
            name = esc(&pic.lanes[i].name),
            addr = esc(&pic.lanes[i].addr),
        );
    }
    s.push_str(r#"<g clip-path="url(#plot)">"#);
    for (i, lane) in pic.lanes.iter().enumerate() {
        let _ = write!(s, r#"<g class="lane" data-lane="{}">"#, esc(&lane.name));
        for band in &lane.bands {
            let _ = write!(
                s,
                r#"<rect class="band {class}" data-t0="{f}" data-t1="{t}" x="{x0:.1}" width="{w:.1}" y="{y:.1}" height="{LANE_H}"><title>{name} {state}, {fs}s to {ts}s</title></rect>"#,
                class = band.state.class(),
                f = band.from,
                t = band.to,
                x0 = x(band.from, end),
                w = (x(band.to, end) - x(band.from, end)).max(0.5),
                y = lane_y(i),
                name = esc(&lane.name),
                state = band.state.describe(),
                fs = seconds(band.from),
                ts = seconds(band.to),
            );
            if let State::Master(gen) = band.state {
                let _ = write!(
                    s,
                    r#"<text class="gen" data-t0="{f}" x="{x0:.1}" y="{y:.1}">gen {gen}</text>"#,
                    f = band.from,
                    x0 = x(band.from, end) + 3.0,
                    y = lane_y(i) + LANE_H / 2.0 + 4.0,
                );
            }
        }
        for mark in &lane.marks {
            let _ = write!(
                s,
                r#"<rect class="mark {kind}" data-t0="{ms}" data-w="5" x="{x0:.1}" width="5" y="{y:.1}" height="{h:.1}"><title>{name} at {at}s: {what}</title></rect>"#,
                kind = mark.kind,
                ms = mark.ms,
                x0 = x(mark.ms, end) - 2.5,
                y = lane_y(i) + 3.0,
                h = LANE_H - 6.0,
                name = esc(&lane.name),
                at = seconds(mark.ms),
                what = esc(&run.with_site_names(&mark.what)),
            );
        }
        s.push_str("</g>");
    }
    // Cuts over the lanes they cut off, translucent, so the roles show through.
    for cut in &pic.cuts {
        for &i in &cut.lanes {
            let _ = write!(
                s,
                r#"<rect class="cut" data-t0="{f}" data-t1="{t}" x="{x0:.1}" width="{w:.1}" y="{y:.1}" height="{h:.1}"><title>{what}, {fs}s to {ts}s</title></rect>"#,
                f = cut.from,
                t = cut.to,
                x0 = x(cut.from, end),
                w = (x(cut.to, end) - x(cut.from, end)).max(1.0),
                y = lane_y(i) - LANE_GAP / 2.0,
                h = LANE_H + LANE_GAP,
                what = esc(&run.with_site_names(&cut.what)),
                fs = seconds(cut.from),
                ts = seconds(cut.to),
            );
        }
    }
    // The writes: a bar from invocation to answer, coloured by outcome.
    for (k, &i) in writers.iter().enumerate() {
        let y = writes_top + k as f64 * (WRITES_H + 4.0);
        let _ = write!(
            s,
            r#"<g class="writes" data-lane="{}">"#,
            esc(&pic.lanes[i].name)
        );
        for w in run.history.iter().filter(|w| w.site == pic.lanes[i].addr) {
            let outcome = match w.outcome.as_str() {
                "ok" | "failed" | "unknown" => w.outcome.as_str(),
                _ => "unknown",
            };
            let _ = write!(
                s,
                r#"<rect class="write {outcome}" data-t0="{a}" data-t1="{b}" x="{x0:.1}" width="{wd:.1}" y="{y:.1}" height="{WRITES_H}"><title>{key}: {outcome}, asked {as_}s, answered {bs}s</title></rect>"#,
                a = w.invoked_ms,
                b = w.completed_ms,
                x0 = x(w.invoked_ms, end),
                wd = (x(w.completed_ms, end) - x(w.invoked_ms, end)).max(1.0),
                key = esc(&w.key),
                as_ = seconds(w.invoked_ms),
                bs = seconds(w.completed_ms),
            );
        }
        s.push_str("</g>");
    }
    // Violations last, on top: a line through the lane of the site (every lane if none).
    for (k, v) in run.violations.iter().enumerate() {
        let ms = v.at_ms.unwrap_or(end);
        let lanes: Vec<usize> = match &v.site {
            Some(site) => pic
                .lanes
                .iter()
                .position(|l| l.addr == site.to_string())
                .into_iter()
                .collect(),
            None => Vec::new(),
        };
        let (y0, y1) = match lanes.first() {
            Some(&i) => (lane_y(i) - 3.0, lane_y(i) + LANE_H + 3.0),
            None => (AXIS_H, lane_y(n)),
        };
        let _ = write!(
            s,
            r##"<a href="#violation-{k}"><line class="violation" data-t0="{ms}" x1="{x0:.1}" x2="{x0:.1}" y1="{y0:.1}" y2="{y1:.1}"><title>{inv} at {at}s: {detail}</title></line></a>"##,
            x0 = x(ms, end),
            inv = esc(&v.invariant),
            at = seconds(ms),
            detail = esc(&run.with_site_names(&v.detail)),
        );
    }
    s.push_str("</g></svg>");
    s
}

/// A tick step in milliseconds giving about ten ticks over `end`.
fn nice_step(end: u64) -> u64 {
    let raw = (end / 10).max(1);
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if step * m >= raw {
                return step * m;
            }
        }
        step *= 10;
    }
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.2em 0 .4em}
code,pre,.trace{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
.verdict{font-weight:bold;padding:.1em .5em;border-radius:3px;color:#fff}
.verdict.pass{background:#2e7d32}.verdict.fail{background:#c62828}
.replay{background:#f4f4f4;padding:.4em .6em;border-radius:3px;display:inline-block}
#timeline{width:100%;height:auto;border:1px solid #ddd;user-select:none;cursor:crosshair}
.axis line{stroke:#eee}.axis text{font-size:10px;fill:#777;text-anchor:middle}
.lane-name,.writes-name{font-size:12px;fill:#333}.writes-name{font-size:10px;fill:#777}
.band.master{fill:#1565c0}.band.client{fill:#90caf9}.band.electing{fill:#ffb300}
.band.down{fill:#424242}.band.paused{fill:#9e9e9e}
.gen{font-size:10px;fill:#fff;pointer-events:none}
.cut{fill:#ef5350;fill-opacity:.35;stroke:#c62828;stroke-dasharray:4 3}
.mark{fill:#000}.mark.elected{fill:#2e7d32}.mark.election-failed{fill:#ff6f00}
.mark.rollback{fill:#8e24aa}.mark.init{fill:#00838f}.mark.join{fill:#43a047}
.mark.removal{fill:#6d4c41}.mark.crash{fill:#d50000}.mark.restart{fill:#00c853}
.mark.storage{fill:#d50000}.mark.duplicate{fill:#ff1744}
.write.ok{fill:#66bb6a}.write.failed{fill:#e53935}.write.unknown{fill:#ffa726}
.violation{stroke:#d50000;stroke-width:3}
.legend span{display:inline-block;margin-right:1em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-1px}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}
td.pass a,td.pass{background:#e8f5e9;color:#1b5e20}td.fail a,td.fail{background:#ffebee;color:#b71c1c;font-weight:bold}
.trace{max-height:28em;overflow:auto;border:1px solid #ddd;padding:.3em .6em;margin:0;list-style:none}
.trace li.violation-line{color:#c62828;font-weight:bold}
#range{color:#555;font-size:12px}
"#;

/// Drag on the timeline to zoom into a range, double-click to see the whole run again; type in
/// the filter to keep only the trace lines that contain the text.
const SCRIPT: &str = r#"
(function(){
var svg=document.getElementById('timeline');if(!svg)return;
var END=+svg.dataset.end,L=70,W=1000,t0=0,t1=END,drag=null;
var range=document.getElementById('range');
function X(t){return L+W*(t-t0)/(t1-t0);}
function layout(){
 svg.querySelectorAll('[data-t0]').forEach(function(e){
  var a=+e.dataset.t0,b=e.dataset.t1!==undefined?+e.dataset.t1:null;
  if(e.tagName==='line'){e.setAttribute('x1',X(a));e.setAttribute('x2',X(a));}
  else if(e.tagName==='g'){var l=e.querySelector('line'),t=e.querySelector('text');
   l.setAttribute('x1',X(a));l.setAttribute('x2',X(a));t.setAttribute('x',X(a));}
  else if(e.tagName==='text'){e.setAttribute('x',X(a)+3);}
  else if(b!==null){e.setAttribute('x',X(a));e.setAttribute('width',Math.max(X(b)-X(a),0.5));}
  else{var w=+(e.dataset.w||5);e.setAttribute('x',X(a)-w/2);}
 });
 if(range)range.textContent='showing '+(t0/1000).toFixed(3)+' s to '+(t1/1000).toFixed(3)+' s (drag to zoom, double-click for the whole run)';
}
function at(ev){var p=svg.createSVGPoint();p.x=ev.clientX;p.y=ev.clientY;
 var q=p.matrixTransform(svg.getScreenCTM().inverse());return t0+(Math.min(Math.max(q.x,L),L+W)-L)/W*(t1-t0);}
svg.addEventListener('mousedown',function(ev){drag=at(ev);});
svg.addEventListener('mouseup',function(ev){if(drag===null)return;var b=at(ev),a=drag;drag=null;
 if(Math.abs(b-a)<(t1-t0)/200)return;t0=Math.min(a,b);t1=Math.max(a,b);layout();});
svg.addEventListener('dblclick',function(){t0=0;t1=END;layout();});
var f=document.getElementById('filter'),lines=document.querySelectorAll('#trace li');
if(f)f.addEventListener('input',function(){var q=f.value.toLowerCase();
 lines.forEach(function(li){li.style.display=li.textContent.toLowerCase().indexOf(q)<0?'none':'';});});
layout();
})();
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}\n<script>{SCRIPT}</script></body></html>\n",
        esc(title)
    )
}

fn legend() -> &'static str {
    concat!(
        r#"<p class="legend">"#,
        r##"<span><i style="background:#1565c0"></i>master</span>"##,
        r##"<span><i style="background:#90caf9"></i>client</span>"##,
        r##"<span><i style="background:#ffb300"></i>electing</span>"##,
        r##"<span><i style="background:#424242"></i>down</span>"##,
        r##"<span><i style="background:#9e9e9e"></i>paused</span>"##,
        r##"<span><i style="background:#ef5350;opacity:.4"></i>cut off</span>"##,
        r##"<span><i style="background:#66bb6a"></i>write ok</span>"##,
        r##"<span><i style="background:#e53935"></i>write failed</span>"##,
        r##"<span><i style="background:#ffa726"></i>write unknown</span>"##,
        r##"<span><i style="background:#d50000"></i>violation</span>"##,
        "</p>"
    )
}

/// One run's page: verdict, replay command, violations, the timeline and the trace.
pub fn run_page(run: &RunResult, replay: ReplayCommand) -> String {
    let failed = is_failure(run);
    let mut b = String::new();
    let title = format!("{} seed {}", run.scenario, run.seed);
    let _ = write!(
        b,
        r#"<h1>{} <span class="verdict {}">{}</span></h1>"#,
        esc(&title),
        if failed { "fail" } else { "pass" },
        if failed { "FAIL" } else { "PASS" }
    );
    let c = &run.counts;
    let _ = write!(
        b,
        "<p>{}s simulated, {} elections, writes {} ok / {} failed / {} unknown, trace <code>{}</code></p>",
        seconds(run.sim_ms),
        c.elections,
        c.writes_ok,
        c.writes_failed,
        c.writes_unknown,
        esc(&run.trace_hash)
    );
    let _ = write!(
        b,
        r#"<p>Replay: <code class="replay" id="replay">{}</code></p>"#,
        esc(&replay(run))
    );
    if !run.sites.is_empty() {
        b.push_str("<p>Sites: ");
        let names: Vec<String> = run
            .sites
            .iter()
            .map(|s| {
                format!(
                    r#"<span title="{}">{} ({})</span>"#,
                    esc(&s.addr),
                    esc(&s.name),
                    esc(&s.addr)
                )
            })
            .collect();
        b.push_str(&names.join(", "));
        b.push_str("</p>");
    }
    if !run.violations.is_empty() {
        b.push_str(r#"<h2>Violations</h2><ol class="violations">"#);
        for (k, v) in run.violations.iter().enumerate() {
            let site = v.site.as_ref().map_or(String::new(), |s| {
                let s = s.to_string();
                format!(" on {} ({})", esc(run.site_name(&s)), esc(&s))
            });
            let at = v
                .at_ms
                .map_or(String::new(), |ms| format!(" at {}s", seconds(ms)));
            let _ = write!(
                b,
                r#"<li id="violation-{k}"><b>{}</b>{site}{at}: {}</li>"#,
                esc(&v.invariant),
                esc(&run.with_site_names(&v.detail))
            );
        }
        b.push_str("</ol>");
    }
    b.push_str("<h2>Timeline</h2>");
    b.push_str(legend());
    b.push_str(r#"<p id="range"></p>"#);
    b.push_str(&timeline_svg(run));
    b.push_str(r#"<h2>Trace</h2><p><label>Filter: <input id="filter" type="search" placeholder="text in the line"></label></p><ol class="trace" id="trace">"#);
    let violation_ms: Vec<u64> = run.violations.iter().filter_map(|v| v.at_ms).collect();
    for line in &run.trace {
        let parsed = crate::timeline::parse(line);
        let class = if parsed.ms.is_some_and(|ms| violation_ms.contains(&ms))
            && line.contains("expectation failed")
        {
            r#" class="violation-line""#
        } else {
            ""
        };
        let _ = write!(
            b,
            r#"<li{class} data-ms="{}">{}</li>"#,
            parsed.ms.unwrap_or(0),
            esc(&run.with_site_names(line))
        );
    }
    b.push_str("</ol>");
    page(&title, &b)
}

/// One run of a suite, as its grid shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The scenario.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Whether it failed.
    pub failed: bool,
    /// Simulated milliseconds.
    pub sim_ms: u64,
    /// Its page, if it has one.
    pub page: Option<String>,
}

/// A suite's page: scenarios by seeds (pass or fail, linking to the run pages), per-scenario
/// simulated time, and the coverage table.
pub fn index_page(
    title: &str,
    tallies: &Tallies,
    cells: &[Cell],
    replay_of: &dyn Fn(&Cell) -> String,
) -> String {
    let mut b = String::new();
    let (runs, failed) = (tallies.runs(), tallies.failed());
    let _ = write!(
        b,
        r#"<h1>{} <span class="verdict {}">{}</span></h1><p>{runs} runs: {} passed, {failed} failed; {}s simulated.</p>"#,
        esc(title),
        if failed == 0 { "pass" } else { "fail" },
        if failed == 0 { "PASS" } else { "FAIL" },
        runs - failed,
        seconds(tallies.sim_ms()),
    );
    // Scenarios in the order first seen, seeds ascending.
    let mut scenarios: Vec<&str> = Vec::new();
    for c in cells {
        if !scenarios.contains(&c.scenario.as_str()) {
            scenarios.push(&c.scenario);
        }
    }
    let mut seeds: Vec<u64> = cells.iter().map(|c| c.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    if !cells.is_empty() && seeds.len() <= 64 {
        b.push_str(r#"<h2>Runs</h2><table class="grid"><tr><th>scenario</th>"#);
        for seed in &seeds {
            let _ = write!(b, "<th>{seed}</th>");
        }
        b.push_str("<th>simulated</th></tr>");
        for scenario in &scenarios {
            let _ = write!(b, "<tr><th>{}</th>", esc(scenario));
            let mut total = 0;
            for seed in &seeds {
                match cells
                    .iter()
                    .find(|c| c.scenario == *scenario && c.seed == *seed)
                {
                    Some(c) => {
                        total += c.sim_ms;
                        let (class, text) = if c.failed {
                            ("fail", "fail")
                        } else {
                            ("pass", "pass")
                        };
                        let tip = format!("{}s simulated; {}", seconds(c.sim_ms), replay_of(c));
                        match &c.page {
                            Some(page) => {
                                let _ = write!(
                                    b,
                                    r#"<td class="{class}" title="{}"><a href="{}">{text}</a></td>"#,
                                    esc(&tip),
                                    esc(page)
                                );
                            }
                            None => {
                                let _ = write!(
                                    b,
                                    r#"<td class="{class}" title="{}">{text}</td>"#,
                                    esc(&tip)
                                );
                            }
                        }
                    }
                    None => b.push_str("<td></td>"),
                }
            }
            let _ = write!(b, "<td>{}s</td></tr>", seconds(total));
        }
        b.push_str("</table>");
    }
    let failures: Vec<&Cell> = cells.iter().filter(|c| c.failed).collect();
    if !failures.is_empty() {
        b.push_str("<h2>Failures</h2><ul>");
        for c in failures {
            let name = format!("{} seed {}", c.scenario, c.seed);
            let link = c.page.as_ref().map_or(esc(&name), |p| {
                format!(r#"<a href="{}">{}</a>"#, esc(p), esc(&name))
            });
            let _ = write!(
                b,
                r#"<li>{link}: <code class="replay">{}</code></li>"#,
                esc(&replay_of(c))
            );
        }
        b.push_str("</ul>");
    }
    let coverage = tallies.coverage();
    if coverage.iter().any(|(_, _, n)| *n > 0) {
        b.push_str(r#"<h2>Coverage</h2><table class="coverage"><tr><th>behaviour</th><th>runs</th><th>what</th></tr>"#);
        for (name, what, reached) in coverage {
            let _ = write!(
                b,
                "<tr><td><code>{name}</code></td><td>{reached}</td><td>{}</td></tr>",
                esc(what)
            );
        }
        b.push_str("</table>");
    }
    page(title, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::result::{RunOutcome, SiteName};

    fn run_with(trace: &[&str]) -> RunResult {
        let mut run = crate::tests::run("s", 1, RunOutcome::Pass);
        run.sim_ms = 10_000;
        run.trace = trace.iter().map(|l| l.to_string()).collect();
        run.sites = ["A", "B"]
            .iter()
            .enumerate()
            .map(|(i, n)| SiteName {
                name: n.to_string(),
                addr: format!("10.0.0.{}:7000", i + 1),
            })
            .collect();
        run
    }

    #[test]
    fn roles_crashes_and_cuts_become_bands_marks_and_shades() {
        let run = run_with(&[
            "0 10.0.0.1:7000 started: priority 100",
            "0 10.0.0.2:7000 started: priority 100",
            "500 10.0.0.1:7000 Site(Voted { candidate: \"10.0.0.1:7000\", egen: 1 })",
            "600 10.0.0.1:7000 Site(Elected { gen: 1, votes: 2, needed: 2 })",
            "600 10.0.0.1:7000 Site(BecameMaster { gen: 1 })",
            "3000 world partition [\"10.0.0.1:7000\"] | [\"10.0.0.2:7000\"]",
            "4000 10.0.0.1:7000 crashed",
            "5000 world heal",
            "6000 10.0.0.1:7000 restarted",
            "6100 10.0.0.1:7000 Site(RolledBack { to: LogPos { gen: 1, lsn: 3 }, txns: [4, 5, 6] })",
        ]);
        let pic = picture(&run);
        let a = &pic.lanes[0];
        let states: Vec<(u64, u64, State)> =
            a.bands.iter().map(|b| (b.from, b.to, b.state)).collect();
        assert_eq!(
            states,
            [
                (0, 500, State::Client),
                (500, 600, State::Electing),
                (600, 4000, State::Master(1)),
                (4000, 6000, State::Down),
                (6000, 10_000, State::Client),
            ]
        );
        let kinds: Vec<&str> = a.marks.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, ["elected", "crash", "restart", "rollback"]);
        assert!(a.marks[3].what.starts_with("rolled back 3 transactions"));
        assert_eq!(
            pic.cuts,
            [Cut {
                from: 3000,
                to: 5000,
                lanes: vec![0],
                what: "partition [\"10.0.0.1:7000\"] | [\"10.0.0.2:7000\"]".into()
            }]
        );
        assert_eq!(pic.lanes[1].bands.len(), 1, "B stayed a client");
    }

    #[test]
    fn the_page_names_sites_pins_violations_and_escapes_everything() {
        let mut run = run_with(&["0 10.0.0.1:7000 started", "10 world note <b>&"]);
        run.outcome = RunOutcome::Fail;
        run.violations = vec![sim::check::Violation {
            invariant: "liveness".into(),
            site: Some(sim::replication::types::SiteAddr::new("10.0.0.2:7000")),
            at_ms: Some(9_000),
            detail: "10.0.0.2:7000 stuck <here>".into(),
        }];
        let html = run_page(&run, &|r| {
            format!("cargo sim run {} --seed {}", r.scenario, r.seed)
        });
        assert!(html.contains(r#"data-lane="A""#) && html.contains(r#"data-lane="B""#));
        assert!(html.contains(r#"class="violation""#));
        assert!(html.contains("cargo sim run s --seed 1"));
        assert!(html.contains("B stuck &lt;here&gt;"), "names, escaped");
        assert!(html.contains("on B (10.0.0.2:7000) at 9.000s"));
        assert!(!html.contains("<b>&"), "trace text is escaped");
        assert!(
            !html.contains("http://") || html.contains("xmlns=\"http://www.w3.org/2000/svg\""),
            "nothing fetched"
        );
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_step(60_000), 10_000);
        assert_eq!(nice_step(38_500), 5_000);
        assert_eq!(nice_step(9), 1);
    }
}
