//! SIGINT and SIGTERM: remove what the run staged, say so in one line, and exit 130 or 143.

use signal_hook::consts::{SIGINT, SIGTERM};

/// Handles SIGINT and SIGTERM on a thread of their own for the rest of the process.
pub fn install() {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else { return };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let note = pv2hvm::io::cleanup::interrupt_note();
            let removed = pv2hvm::io::cleanup::remove_all();
            let dst = removed.iter().find_map(|p| p.to_str()?.strip_suffix(".partial").map(str::to_string));
            match (note, dst) {
                (Some(note), _) => eprintln!("pv2hvm: interrupted: {note}"),
                (None, Some(dst)) => eprintln!("pv2hvm: interrupted: nothing was written to {dst}"),
                (None, None) => eprintln!("pv2hvm: interrupted"),
            }
            std::process::exit(128 + signal);
        }
    });
}
