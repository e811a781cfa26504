//! `fleet plan`: one plan per source, made as `pv2hvm plan` makes them (from existing
//! snapshots, nothing created), `concurrency` in flight, streamed: each plan is written out as
//! it is made, and only counters stay in memory. The JSON file (`-o`) holds one source per line
//! so `fleet run --plan` reads it back one source at a time; the Markdown for review has a
//! summary, one row per source and each plan folded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::Regions;
use crate::aws::ec2;
use crate::aws::instance_types::successor_family;
use crate::aws::migrate::{self, MigrateError};
use crate::guest::playbook::Playbook;
use crate::plan::Plan;
use crate::spec::{ConvertSpec, LayoutKind, Target as Families};

/// A source to plan or run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Target {
    pub source: String,
    pub region: String,
    pub name: Option<String>,
}

/// One source's line in the fleet plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub source: String,
    pub region: String,
    pub name: Option<String>,
    pub instance_type: Option<String>,
    /// "ready", "refused", "already-hvm" or "error" (AWS could not be asked).
    pub verdict: String,
    pub reason: Option<String>,
    /// The instance families the result runs on: "nitro, xen-hvm", "nitro" or "xen-hvm".
    pub targets: Option<String>,
    /// The replacement's family (`m5` for an `m1.large` going to Nitro).
    pub family: Option<String>,
    /// 512 KiB blocks the migration moves: the delta in place, every stored block otherwise.
    pub estimated_blocks: Option<u64>,
    /// Blocks fetched to make this plan.
    pub blocks_read: Option<u64>,
    pub plan: Option<Plan>,
}

/// The header of a fleet plan file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub created: String,
    pub spec: ConvertSpec,
}

const FORMAT: &str = "pv2hvm-fleet-plan";

pub struct PlanOptions {
    pub spec: ConvertSpec,
    pub playbooks: Vec<Playbook>,
    pub work_dir: std::path::PathBuf,
    /// Plans in flight.
    pub concurrency: usize,
    /// EBS requests in flight per plan.
    pub ebs_concurrency: usize,
    pub run_id: String,
}

fn families(t: Families) -> &'static str {
    match t {
        Families::Auto => "nitro, xen-hvm",
        Families::Nitro => "nitro",
        Families::Xen => "xen-hvm",
    }
}

/// Plans one source.
pub fn plan_one(regions: &Regions, t: &Target, o: &PlanOptions) -> Entry {
    let mut e = Entry {
        source: t.source.clone(),
        region: t.region.clone(),
        name: t.name.clone(),
        instance_type: None,
        verdict: "error".into(),
        reason: None,
        targets: None,
        family: None,
        estimated_blocks: None,
        blocks_read: None,
        plan: None,
    };
    let aws = match regions.get(&t.region) {
        Ok(a) => a,
        Err(err) => {
            e.reason = Some(err.to_string());
            return e;
        }
    };
    let src = match ec2::describe_source(&aws, &t.source) {
        Ok(s) => s,
        Err(err) => {
            e.reason = Some(err.to_string());
            return e;
        }
    };
    e.name = src.name.clone().or(e.name);
    e.instance_type = src.instance_type.clone();
    let planned = migrate::plan(
        &aws,
        &t.source,
        Some(src.clone()),
        &o.spec,
        &o.playbooks,
        &o.work_dir,
        o.ebs_concurrency,
        false,
        &o.run_id,
    );
    match planned {
        Ok(p) => {
            e.verdict = "ready".into();
            e.targets = Some(families(p.plan.target).into());
            e.family = src.instance_type.as_deref().map(|ty| {
                successor_family(ty.split('.').next().unwrap_or_default(), p.plan.target.nitro()).to_string()
            });
            e.estimated_blocks = Some(match o.spec.layout {
                LayoutKind::InPlace => p.plan.delta_estimate.map_or(p.stored_blocks, |d| d.blocks),
                _ => p.stored_blocks,
            });
            e.blocks_read = Some(p.blocks_fetched);
            e.plan = Some(p.plan);
        }
        Err(MigrateError::Refused { reason, .. }) if reason.starts_with("already HVM") => {
            e.verdict = "already-hvm".into();
            e.reason = Some(reason);
        }
        Err(MigrateError::Aws(err)) => e.reason = Some(err.to_string()),
        Err(err @ (MigrateError::Refused { .. } | MigrateError::Convert(_) | MigrateError::Declined(_))) => {
            e.verdict = "refused".into();
            let text = err.to_string();
            e.reason = Some(text.strip_prefix(&format!("{}: ", t.source)).unwrap_or(&text).to_string());
        }
    }
    e
}

/// Plans every target `feed` sends, `o.concurrency` at a time, handing each entry to `each` as
/// it is made (in completion order). `feed` runs on its own thread.
pub fn plan_all(
    regions: &Regions,
    o: &PlanOptions,
    feed: impl FnOnce(&SyncSender<Target>) -> Result<(), String> + Send,
    each: &mut dyn FnMut(Entry) -> std::io::Result<()>,
) -> Result<(), String> {
    let n = o.concurrency.max(1);
    let (in_tx, in_rx) = sync_channel::<Target>(n * 2);
    let in_rx: Arc<Mutex<Receiver<Target>>> = Arc::new(Mutex::new(in_rx));
    let (out_tx, out_rx) = sync_channel::<Entry>(n * 2);
    std::thread::scope(|s| {
        let feeder = s.spawn(move || feed(&in_tx));
        for _ in 0..n {
            let rx = Arc::clone(&in_rx);
            let tx = out_tx.clone();
            s.spawn(move || {
                loop {
                    let next = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                    let Ok(t) = next else { return };
                    if tx.send(plan_one(regions, &t, o)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(out_tx);
        let mut written = Ok(());
        for e in out_rx {
            if let Err(err) = each(e) {
                written = Err(format!("writing the plan: {err}"));
                break;
            }
        }
        // Stops the feeder and workers if writing failed (their channels close).
        drop(in_rx);
        let fed = feeder.join().unwrap_or_else(|_| Err("the source listing panicked".into()));
        written.and(fed)
    })
}

/// Writes the plan as it is made: the JSON file line by line, the Markdown's rows and details
/// into unnamed temporary files, the summary as counters.
pub struct PlanWriter {
    json: Option<BufWriter<std::fs::File>>,
    rows: BufWriter<std::fs::File>,
    details: BufWriter<std::fs::File>,
    first: bool,
    verdicts: BTreeMap<String, u64>,
    families: BTreeMap<String, u64>,
    blocks: u64,
    count: u64,
}

impl PlanWriter {
    /// `json`: where the plan file goes (a `.partial` beside it until [`PlanWriter::finish`]).
    pub fn new(json: Option<&Path>, spec: &ConvertSpec) -> std::io::Result<PlanWriter> {
        let json = match json {
            Some(p) => {
                let mut w = BufWriter::new(std::fs::File::create(crate::util::partial_path(p))?);
                let header = Header {
                    format: FORMAT.into(),
                    version: 1,
                    created: crate::aws::tags::now_rfc3339(),
                    spec: spec.clone(),
                };
                let h = serde_json::to_string(&header)?;
                writeln!(w, "{},\"instances\":[", h.strip_suffix('}').unwrap_or(&h))?;
                Some(w)
            }
            None => None,
        };
        Ok(PlanWriter {
            json,
            rows: BufWriter::new(tempfile::tempfile()?),
            details: BufWriter::new(tempfile::tempfile()?),
            first: true,
            verdicts: BTreeMap::new(),
            families: BTreeMap::new(),
            blocks: 0,
            count: 0,
        })
    }

    pub fn add(&mut self, e: &Entry) -> std::io::Result<()> {
        self.count += 1;
        *self.verdicts.entry(e.verdict.clone()).or_default() += 1;
        if let Some(f) = &e.family {
            *self.families.entry(f.clone()).or_default() += 1;
        }
        self.blocks += e.estimated_blocks.unwrap_or(0);
        if let Some(w) = &mut self.json {
            writeln!(w, "{}{}", if self.first { "" } else { "," }, serde_json::to_string(e)?)?;
        }
        self.first = false;
        let cell = |s: Option<&str>| s.unwrap_or("").replace('|', "\\|");
        writeln!(
            self.rows,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            e.source,
            e.region,
            cell(e.name.as_deref()),
            cell(e.instance_type.as_deref()),
            e.verdict,
            cell(e.family.as_deref()),
            e.estimated_blocks.map(|b| b.to_string()).unwrap_or_default(),
            cell(e.reason.as_deref()),
        )?;
        let body = match &e.plan {
            Some(p) => p.render_markdown(),
            None => format!("{}\n", e.reason.as_deref().unwrap_or("no plan")),
        };
        writeln!(
            self.details,
            "<details><summary><code>{}</code>: {}</summary>\n\n{body}\n</details>\n",
            e.source, e.verdict
        )?;
        Ok(())
    }

    /// Closes the JSON file (renamed into place) and writes the Markdown to `out`.
    pub fn finish(mut self, json: Option<&Path>, markdown: Option<&mut dyn Write>) -> std::io::Result<()> {
        if let (Some(mut w), Some(p)) = (self.json.take(), json) {
            writeln!(w, "]}}")?;
            let f = w.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            std::fs::rename(crate::util::partial_path(p), p)?;
        }
        let Some(out) = markdown else { return Ok(()) };
        writeln!(out, "# pv2hvm fleet plan\n")?;
        writeln!(out, "{} source(s); about {} block(s) of 512 KiB to move.\n", self.count, self.blocks)?;
        writeln!(out, "| Verdict | Sources |\n|---|---|")?;
        for (v, n) in &self.verdicts {
            writeln!(out, "| {v} | {n} |")?;
        }
        if !self.families.is_empty() {
            writeln!(out, "\n| Target family | Sources |\n|---|---|")?;
            for (f, n) in &self.families {
                writeln!(out, "| {f} | {n} |")?;
            }
        }
        writeln!(out, "\n| Source | Region | Name | Type | Verdict | Family | Blocks | Reason |")?;
        writeln!(out, "|---|---|---|---|---|---|---|---|")?;
        for part in [self.rows, self.details] {
            let mut f = part.into_inner().map_err(|e| e.into_error())?;
            f.rewind()?;
            std::io::copy(&mut f, out)?;
            if f.stream_position()? > 0 {
                writeln!(out)?;
            }
        }
        Ok(())
    }
}

/// Reads a plan file one source at a time: the header first, then `each` per entry. A file
/// reformatted by another tool (not one source per line) is read whole instead.
pub fn read(path: &Path, each: &mut dyn FnMut(&Header, Entry) -> Result<(), String>) -> Result<Header, String> {
    let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let f = std::fs::File::open(path).map_err(|e| what(&e))?;
    let mut r = BufReader::new(f);
    let mut first = String::new();
    r.read_line(&mut first).map_err(|e| what(&e))?;
    let streamed = first.trim_end().strip_suffix(",\"instances\":[").map(|h| format!("{h}}}"));
    if let Some(h) = streamed.and_then(|h| serde_json::from_str::<Header>(&h).ok()) {
        check_header(&h).map_err(|e| what(&e))?;
        for (n, line) in r.lines().enumerate() {
            let line = line.map_err(|e| what(&e))?;
            let line = line.trim();
            if line == "]}" {
                return Ok(h);
            }
            let e: Entry = serde_json::from_str(line.strip_prefix(',').unwrap_or(line))
                .map_err(|e| what(&format!("line {}: {e}", n + 2)))?;
            each(&h, e)?;
        }
        return Err(what(&"the plan ends early (no closing `]}`): was it cut short?"));
    }
    #[derive(Deserialize)]
    struct Whole {
        #[serde(flatten)]
        header: Header,
        instances: Vec<Entry>,
    }
    let mut text = first;
    r.read_to_string(&mut text).map_err(|e| what(&e))?;
    let w: Whole = serde_json::from_str(&text).map_err(|e| what(&format!("not a pv2hvm fleet plan: {e}")))?;
    check_header(&w.header).map_err(|e| what(&e))?;
    for e in w.instances {
        each(&w.header, e)?;
    }
    Ok(w.header)
}

fn check_header(h: &Header) -> Result<(), String> {
    if h.format != FORMAT {
        return Err(format!("format {:?} is not {FORMAT:?}", h.format));
    }
    if h.version != 1 {
        return Err(format!("fleet plan version {} is newer than this pv2hvm reads (1)", h.version));
    }
    Ok(())
}
