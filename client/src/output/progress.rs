//! Merge progress bars (indicatif, on stderr, only when stderr is a terminal).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Steps of a bar: progress is a fraction, shown with 0.1 % resolution.
const STEPS: u64 = 1000;

/// Whether bars are drawn at all (stderr is a terminal).
pub fn enabled() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// A set of bars, one per merging snapshot set, drawn below the printed lines.
#[derive(Debug)]
pub struct Bars {
    multi: MultiProgress,
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Bars {
    pub fn new() -> Bars {
        let target =
            if enabled() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        Bars { multi: MultiProgress::with_draw_target(target) }
    }

    /// A new bar labelled `label`, at `fraction` (0..1).
    pub fn add(&self, label: String, fraction: f64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(STEPS));
        // The template is a constant known to be valid; fall back to the default style anyway.
        let style = ProgressStyle::with_template("{msg:24} [{bar:40}] {percent:>3}% {elapsed}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label);
        set(&bar, fraction);
        bar
    }

    /// Prints a line above the bars (plain `println!` would be overwritten by them).
    pub fn println(&self, line: &str) {
        if enabled() && !self.multi.is_hidden() {
            let _ = self.multi.println(line);
        } else {
            let _ = crate::print(&format!("{line}\n"));
        }
    }
}

/// Moves `bar` to `fraction` (clamped to 0..1).
pub fn set(bar: &ProgressBar, fraction: f64) {
    let pos = (fraction.clamp(0.0, 1.0) * STEPS as f64).round() as u64;
    bar.set_position(pos);
}
