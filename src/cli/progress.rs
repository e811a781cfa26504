//! Draws the library's progress: a bar on a terminal, a plain line every 10% otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;

use pv2hvm::progress::Progress;

struct Stage {
    bar: Option<indicatif::ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    next_tenth: u64,
}

/// Progress on stderr; nothing at all when quiet.
pub struct Drawer {
    quiet: bool,
    terminal: bool,
    stage: Mutex<Option<Stage>>,
}

impl Drawer {
    pub fn new(quiet: bool) -> Self {
        Drawer { quiet, terminal: std::io::stderr().is_terminal(), stage: Mutex::new(None) }
    }
}

impl Progress for Drawer {
    fn start(&self, stage: &str, total: u64) {
        if self.quiet {
            return;
        }
        let bar = self.terminal.then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(stage.to_string());
            b
        });
        let mut s = self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *s = Some(Stage { bar, label: stage.to_string(), total, done: 0, next_tenth: 0 });
    }

    fn advance(&self, n: u64) {
        let mut s = self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(st) = s.as_mut() else { return };
        st.done += n;
        if let Some(b) = &st.bar {
            b.set_position(st.done);
        } else if st.total > 0 && st.done * 10 / st.total >= st.next_tenth {
            eprintln!("{}: {}%", st.label, st.done * 100 / st.total);
            st.next_tenth = st.done * 10 / st.total + 1;
        }
    }

    fn finish(&self) {
        let mut s = self.stage.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match s.take() {
            Some(Stage { bar: Some(b), .. }) => b.finish_and_clear(),
            Some(st) if st.next_tenth <= 10 => eprintln!("{}: 100%", st.label),
            _ => {}
        }
    }

    fn note(&self, message: &str) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }
}
