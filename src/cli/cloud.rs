//! The AWS subcommands: `migrate`, `plan` of an instance/AMI/snapshot, `cleanup`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use pv2hvm::Error;
use pv2hvm::aws::cleanup::{self, Selection};
use pv2hvm::aws::migrate::{self, MigrateOptions};
use pv2hvm::aws::{Aws, Connection};
use pv2hvm::plan::Plan;

use super::args::{AwsArgs, Format, MigrateArgs};
use super::progress::Drawer;

pub fn connect(a: &AwsArgs) -> Result<Aws> {
    let c = Connection { region: a.region.clone(), profile: a.profile.clone(), adaptive_retry: false };
    Ok(Aws::connect(&c).map_err(Error::from)?)
}

fn work_dir(a: &AwsArgs) -> PathBuf {
    work_dir_or_tmp(a.work_dir.clone())
}

/// `--work-dir`, else $TMPDIR, else /var/tmp.
pub fn work_dir_or_tmp(dir: Option<PathBuf>) -> PathBuf {
    dir.or_else(|| std::env::var_os("TMPDIR").map(PathBuf::from)).unwrap_or_else(|| "/var/tmp".into())
}

pub fn new_run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// Asks on a terminal; off a terminal, without --yes, refuses.
pub fn ask(question: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Refused(format!("{question}: not on a terminal, so pass --yes to go ahead")).into());
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

pub fn plan(
    id: &str,
    a: &AwsArgs,
    snapshot_now: bool,
    spec: &pv2hvm::spec::ConvertSpec,
    books: &[pv2hvm::guest::playbook::Playbook],
) -> Result<Plan> {
    let aws = connect(a)?;
    let planned = migrate::plan(&aws, id, None, spec, books, &work_dir(a), a.concurrency, snapshot_now, &new_run_id())
        .map_err(Error::from)
        .with_context(|| format!("planning the migration of {id}"))?;
    Ok(planned.plan)
}

pub fn migrate(a: MigrateArgs, quiet: bool) -> Result<ExitCode> {
    let (spec, expected_plan) = match &a.saved_plan {
        Some(p) => {
            let saved = pv2hvm::plan::saved::load(p).map_err(Error::from)?;
            (saved.options.clone(), Some(saved))
        }
        None => (a.spec.clone(), None),
    };
    let books = pv2hvm::guest::playbook::load(a.playbooks.as_deref()).map_err(Error::from)?;
    if a.dry_run {
        let plan = plan(&a.source, &a.aws, false, &spec, &books)?;
        if let Some(saved) = &expected_plan {
            pv2hvm::plan::saved::check(saved, &plan)?;
        }
        super::output::print_plan(a.format, &plan)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !a.yes && !std::io::stdin().is_terminal() {
        return Err(Error::Refused(format!(
            "migrating {} needs a confirmation: not on a terminal, so pass --yes to go ahead",
            a.source
        ))
        .into());
    }
    if let Some((r, _)) = a.copy_kms_key_id.iter().find(|(r, _)| !a.copy_to_regions.contains(r)) {
        return Err(Error::Refused(format!("--copy-kms-key-id names {r}, which is not in --copy-to-regions")).into());
    }
    let aws = connect(&a.aws)?;
    let run_id = a.run_id.clone().unwrap_or_else(new_run_id);
    let o = MigrateOptions {
        source: a.source.clone(),
        spec,
        expected_plan,
        copy_to_regions: a.copy_to_regions.clone(),
        name: a.name.clone(),
        stop: a.stop,
        launch: a.launch,
        instance_type: a.instance_type.clone(),
        keep_temp: a.keep_temp,
        kms_key_id: a.kms_key_id.clone(),
        copy_kms_keys: a.copy_kms_key_id.clone(),
        work_dir: work_dir(&a.aws),
        concurrency: a.aws.concurrency,
        playbooks: books,
        grub_dir: a.grub_dir.clone(),
        run_id: run_id.clone(),
    };
    if !quiet {
        eprintln!("pv2hvm: run {run_id} ({} in {})", a.source, aws.region);
    }
    let yes = a.yes;
    let format = a.format;
    let confirm = |plan: &Plan| -> bool {
        if yes {
            return true;
        }
        if format == Format::Text {
            print!("{}", plan.render_text());
        }
        match ask(&format!("migrate {} to an HVM AMI", a.source)) {
            Ok(answer) => answer,
            Err(e) => {
                eprintln!("pv2hvm: {e:#}");
                false
            }
        }
    };
    let report = migrate::migrate(&aws, &o, &Drawer::new(quiet), &confirm).map_err(Error::from).with_context(|| {
        format!("migrating {} (run {run_id}; `pv2hvm cleanup --run-id {run_id}` removes whatever it made)", a.source)
    })?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => {
            for n in &report.notes {
                println!("note: {n}");
            }
            match report.outcome {
                "already-hvm" => println!("{}: already HVM, nothing to do", report.source),
                "already-migrated" => println!(
                    "{}: already migrated to {} (run {})",
                    report.source,
                    report.image.as_deref().unwrap_or("?"),
                    report.run_id
                ),
                _ => {
                    println!(
                        "{} -> {} in {} ({:.1} s; {} block(s) fetched, {} uploaded; root snapshot {})",
                        report.source,
                        report.image.as_deref().unwrap_or("?"),
                        report.region,
                        report.seconds,
                        report.blocks_fetched,
                        report.blocks_uploaded,
                        report.root_snapshot.as_deref().unwrap_or("?"),
                    );
                    for (region, id) in &report.copies {
                        println!("copy in {region}: {id}");
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
pub fn cleanup(
    run_id: Option<&str>,
    older_than_hours: u64,
    regions: &[String],
    a: &AwsArgs,
    yes: bool,
    dry_run: bool,
    format: Format,
) -> Result<ExitCode> {
    let aws = connect(a)?;
    let sel = match run_id {
        Some(r) => Selection::Run(r.to_string()),
        None => Selection::StaleTemporary(older_than_hours * 3600),
    };
    let found = cleanup::cleanup(&aws, &sel, regions, true).map_err(Error::from)?;
    let print = |r: &cleanup::CleanupReport, verb: &str| -> Result<()> {
        if format == Format::Json {
            println!("{}", serde_json::to_string_pretty(r)?);
            return Ok(());
        }
        for i in &r.instances {
            println!("{verb} instance {i}");
        }
        for (region, i) in &r.images {
            println!("{verb} AMI {i} ({region})");
        }
        for (region, s) in &r.snapshots {
            println!("{verb} snapshot {s} ({region})");
        }
        if r.is_empty() {
            println!("nothing to clean up");
        }
        Ok(())
    };
    if dry_run || found.is_empty() {
        print(&found, "would remove")?;
        return Ok(ExitCode::SUCCESS);
    }
    if !yes {
        print(&found, "would remove")?;
        if !ask("remove these")? {
            return Err(Error::Refused("cleanup not confirmed: nothing was removed".into()).into());
        }
    }
    let done = cleanup::cleanup(&aws, &sel, regions, false).map_err(Error::from)?;
    print(&done, "removed")?;
    Ok(ExitCode::SUCCESS)
}
