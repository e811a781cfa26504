//! How a fleet run looks: on a terminal, one line per active source (stage, blocks, rate)
//! under an overall bar; otherwise one plain line per stage change.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pv2hvm::aws::ebs::Transfer;
use pv2hvm::aws::migrate::{MigrateReport, Stage};
use pv2hvm::fleet::run::Watcher;

struct Line {
    bar: ProgressBar,
    stage: String,
    fetched: Option<Arc<Transfer>>,
    uploaded: Option<Arc<Transfer>>,
    since: Instant,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    lines: Mutex<HashMap<String, Line>>,
    stop: AtomicBool,
}

pub struct Watch {
    quiet: bool,
    bars: Option<Arc<Bars>>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn message(source: &str, l: &Line) -> String {
    let f = l.fetched.as_ref().map_or(0, |t| t.blocks());
    let u = l.uploaded.as_ref().map_or(0, |t| t.blocks());
    let secs = l.since.elapsed().as_secs_f64().max(0.1);
    format!("{source:<20} {:<9} {f:>6} fetched {u:>6} uploaded {:>6.1} blocks/s", l.stage, (f + u) as f64 / secs)
}

impl Watch {
    pub fn new(quiet: bool, todo: u64) -> Watch {
        let bars = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let multi = MultiProgress::new();
            let total = multi.add(ProgressBar::new(todo));
            if let Ok(s) =
                ProgressStyle::with_template("fleet [{bar:40}] {pos}/{len} sources, {elapsed} elapsed, eta {eta}")
            {
                total.set_style(s.progress_chars("=> "));
            }
            // Drawn now, at 0 of N, not only once the first source has finished.
            total.tick();
            Arc::new(Bars { multi, total, lines: Mutex::new(HashMap::new()), stop: AtomicBool::new(false) })
        });
        // Counters move between stage events: redraw the active lines twice a second.
        let ticker = bars.clone().map(|b| {
            std::thread::spawn(move || {
                while !b.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(500));
                    let lines = b.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    for (source, l) in lines.iter() {
                        l.bar.set_message(message(source, l));
                    }
                }
            })
        });
        Watch { quiet, bars, ticker: Mutex::new(ticker) }
    }

    pub fn close(&self) {
        if let Some(b) = &self.bars {
            b.stop.store(true, Ordering::Relaxed);
            b.total.finish();
        }
        if let Some(t) = self.ticker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = t.join();
        }
    }

    fn with_line(&self, source: &str, f: impl FnOnce(&mut Line)) {
        if let Some(b) = &self.bars {
            let mut lines = b.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(l) = lines.get_mut(source) {
                f(l);
                l.bar.set_message(message(source, l));
            }
        }
    }
}

impl Watcher for Watch {
    fn started(&self, source: &str, region: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some(b) => {
                let bar = b.multi.insert_before(&b.total, ProgressBar::new_spinner());
                bar.enable_steady_tick(Duration::from_millis(200));
                let l = Line { bar, stage: "starting".into(), fetched: None, uploaded: None, since: Instant::now() };
                l.bar.set_message(message(source, &l));
                b.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(source.to_string(), l);
            }
            None => eprintln!("{source}: started ({region})"),
        }
    }

    fn stage(&self, source: &str, stage: Stage, done: bool, detail: &str) {
        if self.quiet {
            return;
        }
        if self.bars.is_some() {
            self.with_line(source, |l| l.stage = stage.as_str().to_string());
        } else if done {
            eprintln!(
                "{source}: {} done{}",
                stage.as_str(),
                if detail.is_empty() { String::new() } else { format!(" ({detail})") }
            );
        }
    }

    fn transfers(&self, source: &str, fetched: Arc<Transfer>, uploaded: Arc<Transfer>) {
        self.with_line(source, |l| {
            l.fetched = Some(fetched);
            l.uploaded = Some(uploaded);
        });
    }

    fn finished(&self, source: &str, result: Result<&MigrateReport, &str>) {
        if self.quiet {
            return;
        }
        let text = match result {
            Ok(r) => format!("{source}: {} {}", r.outcome, r.image.as_deref().unwrap_or("")),
            Err(e) => format!("{source}: failed: {e}"),
        };
        match &self.bars {
            Some(b) => {
                if let Some(l) = b.lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(source) {
                    l.bar.finish_and_clear();
                    b.multi.remove(&l.bar);
                }
                let _ = b.multi.println(text);
                b.total.inc(1);
            }
            None => eprintln!("{text}"),
        }
    }
}
