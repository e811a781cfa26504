//! `fleet status` and `fleet report`: what the journals say, per source (AMIs per region, the
//! replacement, stage timings, blocks moved, errors), merged from any number of shard journals,
//! in Markdown, JSON, CSV or text. Sources are written one at a time as the journals are read.

use std::io::Write;

use serde::Serialize;

use super::journal::{Entry, Journal, JournalError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Json,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts over every journal given.
#[derive(Debug, Default, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub sources: u64,
    pub done: u64,
    pub failed: u64,
    pub running: u64,
    pub pending: u64,
}

impl Totals {
    fn of(journals: &[Journal]) -> Result<Totals, JournalError> {
        let mut t = Totals::default();
        for j in journals {
            for (status, n) in j.counts()? {
                t.sources += n;
                match status.as_str() {
                    "done" => t.done += n,
                    "failed" => t.failed += n,
                    "running" => t.running += n,
                    _ => t.pending += n,
                }
            }
        }
        Ok(t)
    }
}

fn copies(e: &Entry) -> String {
    e.copies.iter().map(|(r, id)| format!("{r}={id}")).collect::<Vec<_>>().join(" ")
}

fn stages(e: &Entry) -> String {
    e.stages.iter().map(|(s, secs)| format!("{s}={secs:.1}s")).collect::<Vec<_>>().join(" ")
}

/// One CSV field, quoted when it holds a comma, a quote or a newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Writes the report of `journals` to `out`; returns the totals.
pub fn write(journals: &[Journal], format: Format, out: &mut dyn Write) -> Result<Totals, ReportError> {
    let totals = Totals::of(journals)?;
    match format {
        Format::Markdown => {
            writeln!(out, "# pv2hvm fleet report\n")?;
            writeln!(
                out,
                "{} source(s) from {} journal(s): {} done, {} failed, {} running, {} pending.\n",
                totals.sources,
                journals.len(),
                totals.done,
                totals.failed,
                totals.running,
                totals.pending
            )?;
            writeln!(
                out,
                "| Source | Region | Name | Status | AMI | Copies | Replacement | Blocks fetched | Blocks uploaded | Seconds | Stages | Error |"
            )?;
            writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
        }
        Format::Csv => writeln!(
            out,
            "source,region,name,status,outcome,image,copies,instance,blocks_fetched,blocks_uploaded,seconds,stages,error"
        )?,
        Format::Json => write!(
            out,
            "{{\"totals\":{},\"instances\":[",
            serde_json::to_string(&totals).map_err(std::io::Error::from)?
        )?,
        Format::Text => {}
    }
    let mut first = true;
    let mut failure = None;
    for j in journals {
        j.each(&mut |e| {
            if failure.is_some() {
                return;
            }
            let r = (|| -> std::io::Result<()> {
                let o = |s: &Option<String>| s.clone().unwrap_or_default();
                let secs = e.seconds.map(|s| format!("{s:.1}")).unwrap_or_default();
                match format {
                    Format::Markdown => writeln!(
                        out,
                        "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        e.source,
                        e.region,
                        md(&o(&e.name)),
                        e.outcome.as_deref().filter(|_| e.status == "done").unwrap_or(&e.status),
                        o(&e.image),
                        copies(&e),
                        o(&e.instance),
                        e.blocks_fetched,
                        e.blocks_uploaded,
                        secs,
                        stages(&e),
                        md(&o(&e.error)),
                    ),
                    Format::Csv => writeln!(
                        out,
                        "{}",
                        [
                            e.source.clone(),
                            e.region.clone(),
                            o(&e.name),
                            e.status.clone(),
                            o(&e.outcome),
                            o(&e.image),
                            copies(&e),
                            o(&e.instance),
                            e.blocks_fetched.to_string(),
                            e.blocks_uploaded.to_string(),
                            secs,
                            stages(&e),
                            o(&e.error),
                        ]
                        .iter()
                        .map(|f| csv_field(f))
                        .collect::<Vec<_>>()
                        .join(",")
                    ),
                    Format::Json => {
                        write!(out, "{}{}", if first { "\n" } else { ",\n" }, serde_json::to_string(&e)?)
                    }
                    Format::Text => {
                        let what = match e.status.as_str() {
                            "done" => format!("{} {}", o(&e.outcome), o(&e.image)),
                            "running" => format!("at {}", o(&e.stage)),
                            "failed" => o(&e.error),
                            _ => String::new(),
                        };
                        writeln!(out, "{:<20} {:<14} {:<8} {what}", e.source, e.region, e.status)
                    }
                }
            })();
            first = false;
            if let Err(err) = r {
                failure = Some(err);
            }
        })?;
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    match format {
        Format::Json => writeln!(out, "\n]}}")?,
        Format::Text => writeln!(
            out,
            "{} source(s): {} done, {} failed, {} running, {} pending",
            totals.sources, totals.done, totals.failed, totals.running, totals.pending
        )?,
        _ => {}
    }
    Ok(totals)
}
