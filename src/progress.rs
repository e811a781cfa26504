//! Progress for long copies: a bar on a terminal, a plain line every 10% otherwise.

use std::io::IsTerminal;

pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: u64,
    next_line: u64,
    label: String,
}

impl Progress {
    pub fn new(label: &str, total: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_message(label.to_string());
            b
        });
        let next_line = if quiet || bar.is_some() { u64::MAX } else { 0 };
        Progress { bar, total, done: 0, next_line, label: label.to_string() }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.set_position(self.done);
        } else if self.total > 0 && self.done * 10 / self.total >= self.next_line {
            eprintln!("{}: {}%", self.label, self.done * 100 / self.total);
            self.next_line = self.done * 10 / self.total + 1;
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        } else if self.next_line != u64::MAX && self.next_line <= 10 {
            eprintln!("{}: 100%", self.label);
        }
    }
}
