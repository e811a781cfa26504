//! `pv2hvm fleet discover | plan | run | status | report`: the arguments ([`args`]), the
//! commands (here) and how a run looks ([`watch`]).

pub mod args;
pub mod watch;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::SyncSender;

use anyhow::{Context, Result};
use pv2hvm::Error;
use pv2hvm::aws::discover::{self, Item, Query};
use pv2hvm::aws::{AwsError, Connection};
use pv2hvm::fleet::journal::{self, Journal, NewItem};
use pv2hvm::fleet::plan::{self as fleet_plan, PlanOptions, PlanWriter, Target};
use pv2hvm::fleet::run::{self, RunOptions};
use pv2hvm::fleet::shard::{self, Shard};
use pv2hvm::fleet::{Regions, exit, report};

use super::cloud::{ask, new_run_id};
use args::*;
use watch::Watch;

fn regions_of(a: &FleetAws) -> Regions {
    Regions::new(Connection { region: a.region.clone(), profile: a.profile.clone(), adaptive_retry: true })
}

fn work_dir(a: &FleetAws) -> PathBuf {
    super::cloud::work_dir_or_tmp(a.work_dir.clone())
}

fn cloud(e: AwsError) -> anyhow::Error {
    Error::Aws(e).into()
}

/// Sends the selected sources to `tx`: discovered (instances, and AMIs with --images) or read
/// from --ids-file (home region unless a line names one).
fn feed(regions: &Regions, sel: &Selectors, home: &str, tx: &SyncSender<Target>) -> Result<(), String> {
    if let Some(path) = &sel.ids_file {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let id = words.next().unwrap_or_default().to_string();
            if pv2hvm::aws::ResourceKind::of(&id).is_none() {
                return Err(format!("{}:{}: {id:?} is not an instance, AMI or snapshot id", path.display(), n + 1));
            }
            let region = words.next().unwrap_or(home).to_string();
            if tx.send(Target { source: id, region, name: None }).is_err() {
                return Ok(());
            }
        }
        return Ok(());
    }
    let home_aws = regions.get(home).map_err(|e| e.to_string())?;
    let names = discover::regions(&home_aws, &sel.regions).map_err(|e| e.to_string())?;
    let q = Query { filters: sel.filters.clone(), instances: true, images: sel.images };
    discover::discover(&home_aws, &names, &q, &mut |item: Item| {
        // Refused ones too: the plan and the run report them with their reason.
        let _ = tx.send(Target { source: item.id, region: item.region, name: item.name });
        Ok(())
    })
    .map_err(|e| e.to_string())
}

pub fn dispatch(cmd: FleetCmd, quiet: bool) -> Result<ExitCode> {
    match cmd {
        FleetCmd::Discover { sel, aws, format } => discover_cmd(&sel, &aws, format),
        FleetCmd::Plan { sel, aws, spec, concurrency, output, format, playbooks } => {
            plan_cmd(&sel, &aws, spec, concurrency, output.as_deref(), format, playbooks.as_deref())
        }
        FleetCmd::Run(a) => run_cmd(a, quiet),
        FleetCmd::Status { journal, format } => status_cmd(&journal, format),
        FleetCmd::Report { journals, format } => {
            let js = open_existing(&journals)?;
            let f = match format {
                ReportFormat::Markdown => report::Format::Markdown,
                ReportFormat::Json => report::Format::Json,
                ReportFormat::Csv => report::Format::Csv,
            };
            let mut out = std::io::stdout().lock();
            report::write(&js, f, &mut out).map_err(|e| Error::Refused(e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn open_existing(paths: &[PathBuf]) -> Result<Vec<Journal>> {
    paths
        .iter()
        .map(|p| {
            if !p.exists() {
                return Err(Error::Refused(format!("{}: no such journal", p.display())).into());
            }
            Journal::open(p).map_err(|e| Error::Refused(e.to_string()).into())
        })
        .collect()
}

fn discover_cmd(sel: &Selectors, a: &FleetAws, format: ListFormat) -> Result<ExitCode> {
    let regions = regions_of(a);
    let home = regions.home().map_err(cloud)?;
    let names = discover::regions(&home, &sel.regions).map_err(cloud)?;
    let q = Query { filters: sel.filters.clone(), instances: true, images: true };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0u64;
    match format {
        ListFormat::Csv => {
            writeln!(out, "id,kind,region,name,type,state,root_device_type,root_device,kernel,launched,verdict,reason")?
        }
        ListFormat::Json => write!(out, "[")?,
        ListFormat::Text => {}
    }
    let mut write_err = None;
    discover::discover(&home, &names, &q, &mut |i: Item| {
        let o = |s: &Option<String>| s.clone().unwrap_or_default();
        let r = match format {
            ListFormat::Text => writeln!(
                out,
                "{:<21} {:<8} {:<14} {:<20} {:<11} {:<9} {:<13} {}{}",
                i.id,
                i.kind,
                i.region,
                o(&i.name),
                o(&i.instance_type),
                o(&i.state),
                o(&i.kernel_id),
                i.verdict,
                i.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
            ),
            ListFormat::Json => {
                let sep = if n == 0 { "\n" } else { ",\n" };
                serde_json::to_string(&i).map_err(std::io::Error::from).and_then(|j| write!(out, "{sep}{j}"))
            }
            ListFormat::Csv => {
                let fields = [
                    i.id.clone(),
                    i.kind.clone(),
                    i.region.clone(),
                    o(&i.name),
                    o(&i.instance_type),
                    o(&i.state),
                    o(&i.root_device_type),
                    o(&i.root_device),
                    o(&i.kernel_id),
                    o(&i.launched),
                    i.verdict.clone(),
                    o(&i.reason),
                ];
                writeln!(out, "{}", fields.iter().map(|s| report::csv_field(s)).collect::<Vec<_>>().join(","))
            }
        };
        n += 1;
        r.map_err(|e| {
            write_err = Some(e.to_string());
            AwsError::Other("stopped: the output could not be written".into())
        })
    })
    .map_err(|e| match write_err.take() {
        Some(w) => anyhow::anyhow!("writing the list: {w}"),
        None => cloud(e),
    })?;
    if format == ListFormat::Json {
        writeln!(out, "\n]")?;
    }
    out.flush()?;
    if format == ListFormat::Text {
        eprintln!("{n} PV source(s) in {} region(s)", names.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn plan_cmd(
    sel: &Selectors,
    a: &FleetAws,
    spec: pv2hvm::spec::ConvertSpec,
    concurrency: usize,
    output: Option<&Path>,
    format: PlanFormat,
    playbooks: Option<&Path>,
) -> Result<ExitCode> {
    let regions = regions_of(a);
    let home = regions.home().map_err(cloud)?.region.clone();
    let books = pv2hvm::guest::playbook::load(playbooks).map_err(Error::from)?;
    let o = PlanOptions {
        spec: spec.clone(),
        playbooks: books,
        work_dir: work_dir(a),
        concurrency,
        ebs_concurrency: a.ebs_concurrency,
        run_id: new_run_id(),
    };
    let mut w = PlanWriter::new(output, &spec).with_context(|| "starting the plan file")?;
    let json_stdout = format == PlanFormat::Json && output.is_none();
    let mut stdout_json = std::io::BufWriter::new(std::io::stdout());
    let mut first = true;
    if json_stdout {
        write!(stdout_json, "[")?;
    }
    fleet_plan::plan_all(&regions, &o, |tx| feed(&regions, sel, &home, tx), &mut |e| {
        w.add(&e)?;
        if json_stdout {
            write!(stdout_json, "{}{}", if first { "\n" } else { ",\n" }, serde_json::to_string(&e)?)?;
            first = false;
        }
        Ok(())
    })
    .map_err(Error::Refused)?;
    if json_stdout {
        writeln!(stdout_json, "\n]")?;
        stdout_json.flush()?;
    }
    let mut stdout = std::io::stdout().lock();
    let md: Option<&mut dyn Write> = if format == PlanFormat::Markdown { Some(&mut stdout) } else { None };
    w.finish(output, md).with_context(|| "writing the plan")?;
    if let (Some(p), PlanFormat::Json) = (output, format) {
        std::io::copy(&mut std::fs::File::open(p)?, &mut std::io::stdout().lock())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn status_cmd(path: &Path, format: StatusFormat) -> Result<ExitCode> {
    let js = open_existing(&[path.to_path_buf()])?;
    let j = &js[0];
    let mut out = std::io::stdout().lock();
    match format {
        StatusFormat::Text => {
            if let Some(run) = j.meta("run_id").map_err(|e| Error::Refused(e.to_string()))? {
                let shard = j.meta("shard").ok().flatten().map(|s| format!(", shard {s}")).unwrap_or_default();
                writeln!(out, "run {run}{shard}")?;
            }
            report::write(&js, report::Format::Text, &mut out).map_err(|e| Error::Refused(e.to_string()))?;
        }
        StatusFormat::Json => {
            report::write(&js, report::Format::Json, &mut out).map_err(|e| Error::Refused(e.to_string()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_cmd(a: RunArgs, quiet: bool) -> Result<ExitCode> {
    if !a.yes && !std::io::stdin().is_terminal() {
        return Err(Error::Refused(
            "a fleet run needs a confirmation: not on a terminal, so pass --yes to go ahead".into(),
        )
        .into());
    }
    let env = |k: &str| std::env::var(k).ok();
    let shard = match a.shard {
        Some(s) => {
            s.check_count(env).map_err(Error::Refused)?;
            Some(s)
        }
        None => Shard::from_env(env).map_err(Error::Refused)?,
    };
    let journal_path = a.journal.clone().unwrap_or_else(|| match shard {
        Some(s) => PathBuf::from(format!("pv2hvm-fleet-{}-of-{}.db", s.k, s.n)),
        None => PathBuf::from("pv2hvm-fleet.db"),
    });
    // AWS first: an unreachable endpoint or no credentials leaves no journal behind.
    let regions = regions_of(&a.aws);
    let home = regions.home().map_err(cloud)?.region.clone();
    // One run per journal at a time: a second run of the same shard (a replacement pod, a
    // retried child whose first node is not quite gone) stops here, before it writes anything.
    let _held = match journal::lock_for_run(&journal_path) {
        Ok(l) => l,
        Err(e @ journal::LockError::Held { .. }) => {
            eprintln!("pv2hvm: error: {e}");
            return Ok(ExitCode::from(exit::BUSY));
        }
        Err(journal::LockError::Io { lock, err }) => {
            return Err(Error::Commit { target: format!("the journal's lock {}", lock.display()), err }.into());
        }
    };
    let journal = Journal::open(&journal_path).map_err(|e| Error::Refused(e.to_string()))?;
    let bad = |e: pv2hvm::fleet::journal::JournalError| anyhow::Error::from(Error::Refused(e.to_string()));
    let shard_text = shard.map(|s| s.to_string()).unwrap_or_else(|| "all".into());
    match journal.meta("shard").map_err(bad)? {
        Some(s) if s != shard_text => {
            return Err(Error::Refused(format!(
                "{} holds shard {s}, not {shard_text}: each shard keeps its own journal",
                journal_path.display()
            ))
            .into());
        }
        Some(_) => {}
        None => journal.set_meta("shard", &shard_text).map_err(bad)?,
    }
    // --run-id, else the array job's (all shards share it), else the journal's, else new.
    let run_id = match (a.run_id.clone().or_else(|| shard::run_id_from_env(env)), journal.meta("run_id").map_err(bad)?)
    {
        (Some(r), _) => r,
        (None, Some(r)) => r,
        (None, None) => new_run_id(),
    };
    journal.set_meta("run_id", &run_id).map_err(bad)?;

    // The sources of this shard go into the journal (a batch per transaction), with their
    // saved plans when there is a plan file.
    let mut spec = a.spec.clone();
    let mut batch: Vec<(Target, Option<String>)> = Vec::new();
    let mut added = 0;
    let mut flush = |batch: &mut Vec<(Target, Option<String>)>| -> Result<()> {
        let items: Vec<NewItem> = batch
            .iter()
            .map(|(t, p)| NewItem { source: &t.source, region: &t.region, name: t.name.as_deref(), plan: p.as_deref() })
            .collect();
        added += journal.add(&items).map_err(bad)?;
        batch.clear();
        Ok(())
    };
    let mine = |id: &str| shard.is_none_or(|s| s.holds(id));
    if let Some(p) = &a.saved_plan {
        let mut err = None;
        let header = fleet_plan::read(p, &mut |_, e| {
            if !mine(&e.source) {
                return Ok(());
            }
            let plan = e.plan.as_ref().map(serde_json::to_string).transpose().map_err(|x| x.to_string())?;
            batch.push((Target { source: e.source, region: e.region, name: e.name }, plan));
            if batch.len() >= 500
                && let Err(x) = flush(&mut batch)
            {
                err = Some(x.to_string());
                return Err("the journal could not be written".into());
            }
            Ok(())
        })
        .map_err(|e| Error::Refused(err.take().unwrap_or(e)))?;
        spec = header.spec;
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Target>(256);
        std::thread::scope(|s| -> Result<()> {
            let (regions, sel, home) = (&regions, &a.sel, &home);
            // The sender moves into the listing thread, so the channel ends when it does.
            let f = s.spawn(move || feed(regions, sel, home, &tx));
            for t in rx.iter() {
                if mine(&t.source) {
                    batch.push((t, None));
                    if batch.len() >= 500 {
                        flush(&mut batch)?;
                    }
                }
            }
            drop(rx);
            f.join().unwrap_or_else(|_| Err("listing panicked".into())).map_err(Error::Refused)?;
            Ok(())
        })?;
    }
    flush(&mut batch)?;
    let counts = journal.counts().map_err(bad)?;
    let todo: u64 = counts.iter().filter(|(s, _)| s != "done").map(|(_, n)| n).sum();
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    if !quiet {
        eprintln!(
            "pv2hvm: fleet run {run_id}, shard {shard_text}: {total} source(s) in {} ({added} new), {todo} to do",
            journal_path.display()
        );
    }
    if todo > 0 && !a.yes && !ask(&format!("migrate {todo} source(s) to HVM AMIs"))? {
        return Err(Error::Refused("not confirmed: nothing was migrated".into()).into());
    }
    let books = pv2hvm::guest::playbook::load(a.playbooks.as_deref()).map_err(Error::from)?;
    // Each run and shard stages in a directory of its own: children of an array job that land
    // on one node share the node's work directory.
    let run_dir = work_dir(&a.aws).join(format!("pv2hvm-fleet-{run_id}-{}", shard_text.replace('/', "-of-")));
    std::fs::create_dir_all(&run_dir)
        .map_err(|err| Error::Commit { target: format!("the work directory {}", run_dir.display()), err })?;
    let o = RunOptions {
        spec,
        playbooks: books,
        work_dir: run_dir.clone(),
        concurrency: a.concurrency,
        per_region: a.per_region.unwrap_or(a.concurrency),
        ebs_concurrency: a.aws.ebs_concurrency,
        copy_to_regions: a.copy_to_regions.clone(),
        copy_kms_keys: a.copy_kms_key_id.clone(),
        kms_key_id: a.kms_key_id.clone(),
        launch: a.launch,
        stop: a.stop,
        keep_temp: a.keep_temp,
        grub_dir: a.grub_dir.clone(),
        fail_fast: a.fail_fast,
        run_id: run_id.clone(),
    };
    let watch = Watch::new(quiet, todo);
    let summary = run::run(&regions, &journal, &o, &watch).map_err(Error::Refused)?;
    watch.close();
    let counts = journal.counts().map_err(bad)?;
    let count = |k: &str| counts.iter().find(|(s, _)| s == k).map_or(0, |(_, n)| *n);
    println!(
        "fleet run {run_id}: {} done, {} failed this run; the journal has {} done, {} failed, {} pending (report: pv2hvm fleet report --journal {})",
        summary.done,
        summary.failed,
        count("done"),
        count("failed"),
        count("pending") + count("running"),
        journal_path.display()
    );
    if summary.stopped_early {
        println!("--fail-fast: sources not started stay pending; run again to go on");
    }
    // Whatever a migration stages it removes; an empty directory is all that should be left.
    let _ = std::fs::remove_dir(&run_dir);
    Ok(ExitCode::from(summary.exit_code()))
}
